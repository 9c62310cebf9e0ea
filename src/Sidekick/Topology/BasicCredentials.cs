using System.Text;

namespace Sidekick.Topology;

/// <summary>
/// The user information of a SITE endpoint, <c>http://user:password@host</c>, as HTTP Basic credentials: Go's
/// client sends <c>Authorization: Basic base64(user:password)</c> for a URL that carries a user, with the user and
/// the password percent-decoded (url.UserPassword); a user without ':' has an empty password. Only health probes
/// send it. It prints as <see cref="Observability.SecretRedaction.Redacted"/> and compares by value.
/// </summary>
internal sealed class BasicCredentials : IEquatable<BasicCredentials>
{
    private BasicCredentials(string user, string password, string headerValue)
    {
        User = user;
        Password = password;
        HeaderValue = headerValue;
    }

    /// <summary>The user, percent-decoded (as UTF-8 text).</summary>
    public string User { get; }

    /// <summary>The password, percent-decoded (as UTF-8 text); empty when the user information has no ':'.</summary>
    public string Password { get; }

    /// <summary>The value of the probes' Authorization header: <c>Basic </c> and the base64 of the decoded bytes.</summary>
    public string HeaderValue { get; }

    /// <summary>User information as typed (between <c>scheme://</c> and the last '@' of the authority).</summary>
    public static BasicCredentials Parse(string userInfo)
    {
        var colon = userInfo.IndexOf(':', StringComparison.Ordinal);
        var user = Decode(colon < 0 ? userInfo : userInfo[..colon]);
        var password = colon < 0 ? [] : Decode(userInfo[(colon + 1)..]);
        var pair = new byte[user.Length + 1 + password.Length];
        user.CopyTo(pair, 0);
        pair[user.Length] = (byte)':';
        password.CopyTo(pair, user.Length + 1);
        return new BasicCredentials(Encoding.UTF8.GetString(user), Encoding.UTF8.GetString(password), "Basic " + Convert.ToBase64String(pair));
    }

    /// <summary>Percent-decoding into bytes, as Go's unescape (a '+' stays a '+'); a '%' not followed by two hex digits stays.</summary>
    private static byte[] Decode(string text)
    {
        var raw = Encoding.UTF8.GetBytes(text);
        var bytes = new List<byte>(raw.Length);
        for (var i = 0; i < raw.Length; i++)
        {
            if (raw[i] == '%' && i + 2 < raw.Length && IsHex(raw[i + 1]) && IsHex(raw[i + 2]))
            {
                bytes.Add((byte)((Hex(raw[i + 1]) << 4) | Hex(raw[i + 2])));
                i += 2;
            }
            else
            {
                bytes.Add(raw[i]);
            }
        }

        return [.. bytes];
    }

    private static bool IsHex(byte b) => char.IsAsciiHexDigit((char)b);

    private static int Hex(byte b) => b <= '9' ? b - '0' : (b | 0x20) - 'a' + 10;

    public bool Equals(BasicCredentials? other) => other is not null && other.HeaderValue == HeaderValue;

    public override bool Equals(object? obj) => Equals(obj as BasicCredentials);

    public override int GetHashCode() => HeaderValue.GetHashCode(StringComparison.Ordinal);

    /// <summary>Never the credentials: a record that holds them may be printed.</summary>
    public override string ToString() => Observability.SecretRedaction.Redacted;
}
