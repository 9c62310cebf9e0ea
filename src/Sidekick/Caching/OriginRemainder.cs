using System.Globalization;
using Microsoft.Net.Http.Headers;
using Sidekick.Forwarding;

namespace Sidekick.Caching;

/// <summary>
/// Finishes from the origin a body the cache began to serve and cannot finish: the store broke mid-body and could
/// not resume, or the fill being read was given up or stalled. The client's headers are out, so until now its
/// connection was cut and its S3 client read the whole object again. Now the bytes still owed are asked of the
/// origin with the client's own request (<c>Range</c> from the first byte not sent, <c>If-Match</c> with the
/// entry's strong ETag) and sent on, but only when the answer is exactly those bytes of that version: a 206 with
/// that Content-Range and that ETag. Anything else is not copied, and the client is cut as before.
/// </summary>
internal sealed class OriginRemainder : IExchangeObserver
{
    private readonly CachedResponse _entry;
    private readonly long _from;
    private readonly long _to;
    private bool _taken;

    private OriginRemainder(CachedResponse entry, long from, long to)
    {
        _entry = entry;
        _from = from;
        _to = to;
    }

    /// <summary>Why the origin's answer was not taken; null when it was (or none was asked).</summary>
    public string? Refusal { get; private set; }

    /// <summary>
    /// Sends bytes <paramref name="from"/> through <paramref name="to"/> of <paramref name="entry"/>'s body to the
    /// client from the origin. True when every one of them was sent; false, with the reason, when the entry has no
    /// strong ETag, the origin did not answer with those bytes, or they stopped coming (the client is then to be cut).
    /// </summary>
    public static async Task<(bool Sent, string Why)> TrySendAsync(HttpContext context, ICacheOrigin origin, CachedResponse entry, long from, long to)
    {
        if (entry.ETag is not { } etag || etag.StartsWith("W/", StringComparison.Ordinal))
        {
            return (false, "no strong ETag to ask the origin for the same version");
        }

        var remainder = new OriginRemainder(entry, from, to);
        var sent = new CountingClientBody(context.Response.Body);
        // Ended with the client's request: a client that gives up on a silent origin (S3 clients do after about a
        // minute) must not leave this exchange waiting for the backend timeout.
        var standIn = StandInRequest.From(context).ForRest(etag, from, to, sent, context.RequestAborted);
        try
        {
            await origin.ForwardAsync(standIn, remainder);
        }
        catch (Exception ex) when (!context.RequestAborted.IsCancellationRequested)
        {
            remainder.Refusal ??= ex.Message;
        }

        var owed = to - from + 1;
        return remainder._taken && sent.Count == owed
            ? (true, "")
            : (false, remainder.Refusal ?? $"the origin sent {sent.Count.ToString(CultureInfo.InvariantCulture)} of the {owed.ToString(CultureInfo.InvariantCulture)} bytes owed");
    }

    /// <summary>
    /// Whether an answer is exactly bytes <paramref name="from"/> through <paramref name="to"/> of
    /// <paramref name="entry"/>'s version: a 206 with that Content-Range and the entry's ETag. Else says why, and
    /// whether it shows that the version changed (a 412 to If-Match, or another ETag).
    /// </summary>
    internal static bool IsTheRest(HttpResponse response, CachedResponse entry, long from, long to, out string refusal, out bool changed)
    {
        var invariant = CultureInfo.InvariantCulture;
        var expected = $"bytes {from.ToString(invariant)}-{to.ToString(invariant)}/{entry.Length.ToString(invariant)}";
        var etag = response.Headers[HeaderNames.ETag].ToString();
        var range = response.Headers[HeaderNames.ContentRange].ToString();
        if (response.StatusCode == StatusCodes.Status206PartialContent && range == expected && etag == entry.ETag)
        {
            (refusal, changed) = ("", false);
            return true;
        }

        changed = response.StatusCode == StatusCodes.Status412PreconditionFailed ||
                  (response.StatusCode is StatusCodes.Status200OK or StatusCodes.Status206PartialContent && etag.Length > 0 && etag != entry.ETag);
        refusal = response.StatusCode == StatusCodes.Status206PartialContent
            ? $"the origin answered HTTP 206 with Content-Range '{range}' and ETag '{etag}' (expected '{expected}' and '{entry.ETag}')"
            : $"the origin answered HTTP {response.StatusCode.ToString(invariant)}";
        return false;
    }

    public bool OnResponseHead(HttpContext context)
    {
        if (_taken)
        {
            // A retry's second head: bytes of the first may have gone to the client, and they cannot be taken back.
            _taken = false;
            Refusal = "a retry brought another response after part of the first";
            return false;
        }

        _taken = IsTheRest(context.Response, _entry, _from, _to, out var refusal, out _);
        Refusal = _taken ? null : refusal;
        return _taken;
    }

    public bool OnNoAnswer(HttpContext context)
    {
        Refusal ??= "no backend answered";
        return true; // nothing of sidekick's own 502 goes into a body already under way
    }

    public void OnBody(ReadOnlySpan<byte> data)
    {
    }

    public ValueTask WhenBodyWritable() => default;

    /// <summary>The client's response body, as the stand-in request's forwarder writes into it; counts what went through.</summary>
    private sealed class CountingClientBody(Stream client) : Stream
    {
        public long Count { get; private set; }

        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            await client.WriteAsync(buffer, cancellationToken);
            Count += buffer.Length;
        }

        public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        public override void Write(byte[] buffer, int offset, int count) => WriteAsync(buffer, offset, count).GetAwaiter().GetResult();

        public override Task FlushAsync(CancellationToken cancellationToken) => client.FlushAsync(cancellationToken);

        public override void Flush() => client.Flush();
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
    }
}
