using System.Buffers;
using System.Text;
using System.Text.Json;

namespace Sidekick.Observability;

/// <summary>
/// The lines of one write as UTF-8, in a buffer kept from batch to batch. JSON records are written into it
/// directly by one reused <see cref="Utf8JsonWriter"/>; text is built in one reused builder and encoded. Before,
/// every JSON record cost a MemoryStream, its arrays, a writer and two strings, and the batch a StringBuilder
/// the console's writer encoded again (measured: formatting was ~9 % of the process's CPU at 1 KiB x 32).
/// </summary>
internal sealed class LineBatch : IDisposable
{
    private readonly TraceFormatter _formatter;
    // Grows to the largest batch (what 20 ms of requests print, under load) and stays; small while little is printed.
    private readonly ArrayBufferWriter<byte> _bytes = new();
    private readonly StringBuilder _text = new(512);
    private readonly Encoder _encoder = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false).GetEncoder();
    private readonly Utf8JsonWriter _json;

    public LineBatch(TraceFormatter formatter)
    {
        _formatter = formatter;
        _json = new Utf8JsonWriter(_bytes, TraceFormatter.JsonOptions);
    }

    /// <summary>Bytes in the batch so far.</summary>
    public int Length => _bytes.WrittenCount;

    /// <summary>Lines in the batch so far.</summary>
    public int Count { get; private set; }

    public ReadOnlySpan<byte> Bytes => _bytes.WrittenSpan;

    public void Add(string line)
    {
        Encode(line);
        NewLine();
    }

    public void Add(in TraceRecord record)
    {
        // Plain ASCII throughout, as nearly every record: a short line is written straight as UTF-8.
        var written = _formatter.ShortJson
            ? ShortJsonLine.TryWrite(in record, _bytes)
            : _formatter.ShortTextLines && ShortTextLine.TryWrite(in record, _formatter.Colors, _bytes);
        if (!written)
        {
            Format(in record);
        }

        NewLine();
    }

    /// <summary>Empties the batch for the next write, keeping its buffer.</summary>
    public void Clear()
    {
        _bytes.ResetWrittenCount();
        Count = 0;
    }

    public void Dispose() => _json.Dispose();

    /// <summary>The record through the general formatter, which escapes what the short lines cannot write directly.</summary>
    private void Format(in TraceRecord record)
    {
        if (_formatter.Json)
        {
            _formatter.Write(in record, _json);
            _json.Flush();
            // Ready for the next top-level value; the output (this batch's buffer) stays.
            _json.Reset();
        }
        else
        {
            _formatter.Append(in record, _text.Clear());
            var chunks = _text.GetChunks().GetEnumerator();
            if (chunks.MoveNext() && chunks.Current.Length == _text.Length)
            {
                // One chunk, as nearly always: the builder keeps the capacity of the longest line so far.
                Encode(chunks.Current.Span);
            }
            else
            {
                EncodeChunks();
            }
        }
    }

    private void Encode(ReadOnlySpan<char> chars)
    {
        var span = _bytes.GetSpan(Encoding.UTF8.GetMaxByteCount(chars.Length));
        _bytes.Advance(Encoding.UTF8.GetBytes(chars, span));
    }

    /// <summary>
    /// A line longer than the builder's first chunk: through a stateful encoder, so that a surrogate pair split
    /// between two chunks is still encoded as one character.
    /// </summary>
    private void EncodeChunks()
    {
        foreach (var chunk in _text.GetChunks())
        {
            // One more character than given: the high surrogate the encoder may hold from the chunk before.
            var span = _bytes.GetSpan(Encoding.UTF8.GetMaxByteCount(chunk.Length + 1));
            _bytes.Advance(_encoder.GetBytes(chunk.Span, span, flush: false));
        }

        var rest = _bytes.GetSpan(Encoding.UTF8.GetMaxByteCount(1));
        _bytes.Advance(_encoder.GetBytes([], rest, flush: true));
    }

    private void NewLine()
    {
        Count++;
        _bytes.GetSpan(1)[0] = (byte)'\n';
        _bytes.Advance(1);
    }
}
