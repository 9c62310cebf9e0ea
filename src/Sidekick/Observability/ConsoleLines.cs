using System.Globalization;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;

namespace Sidekick.Observability;

/// <summary>
/// sidekick's own lines (listening, signals, reloads, the generated certificate, errors while running):
/// upstream's <c>program: message</c>, or with --json one object per line in the state log's shape
/// (<c>{"Type":"INFO"|"ERROR","Message":…,…,"Timestamp":…}</c>), so that every line a log collector reads
/// is JSON. Messages go through <see cref="SecretRedaction.Text"/>.
/// </summary>
internal sealed class ConsoleLines(bool json, string programName, TimeProvider time)
{
    private static readonly JsonWriterOptions JsonOptions = new() { Encoder = LogJsonEncoder.Instance };

    /// <summary>Plain text under the default program name, for code that runs without options (tests, reloads).</summary>
    public static ConsoleLines Plain { get; } = new(false, "sidekick", TimeProvider.System);

    public bool Json => json;

    /// <summary>An informational line; <paramref name="fields"/> (a string or a number each) are added to the JSON form.</summary>
    public string Info(string message, params ReadOnlySpan<(string Name, object Value)> fields) => Line("INFO", message, fields);

    /// <summary>A problem that sidekick survives (on stderr).</summary>
    public string Error(string message, params ReadOnlySpan<(string Name, object Value)> fields) => Line("ERROR", message, fields);

    /// <summary>A start-up warning: sidekick goes on as the line says (on stderr; in JSON an ERROR whose message says so).</summary>
    public string Warning(string message) => Error($"warning: {message}");

    private string Line(string type, string message, ReadOnlySpan<(string Name, object Value)> fields)
    {
        // A message may quote a SITE or URL the operator typed, credentials and all.
        message = SecretRedaction.Text(message);
        if (!json)
        {
            return $"{programName}: {message}";
        }

        using var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer, JsonOptions))
        {
            writer.WriteStartObject();
            writer.WriteString("Type", type);
            writer.WriteString("Message", message);
            foreach (var (name, value) in fields)
            {
                switch (value)
                {
                    case int number:
                        writer.WriteNumber(name, number);
                        break;
                    case long number:
                        writer.WriteNumber(name, number);
                        break;
                    default:
                        writer.WriteString(name, Convert.ToString(value, CultureInfo.InvariantCulture));
                        break;
                }
            }

            writer.WriteString("Timestamp", time.GetUtcNow().UtcDateTime);
            writer.WriteEndObject();
        }

        return Encoding.UTF8.GetString(buffer.ToArray());
    }
}
