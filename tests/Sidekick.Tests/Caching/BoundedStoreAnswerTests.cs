using System.Net;
using Sidekick.Caching;

namespace Sidekick.Tests.Caching;

/// <summary>
/// What StoreHttpClients.BoundedAnswers wraps and what it leaves alone: an object read that succeeded (every HIT's body)
/// is handed on as it came; a listing's answer is cut at 8 MiB, an error's at 64 KiB, each failing with the store's
/// status once past it, and a body of exactly the bound is read whole.
/// </summary>
public sealed class BoundedStoreAnswerTests
{
    [Fact]
    public async Task An_object_read_that_succeeded_is_handed_on_unwrapped()
    {
        var content = new StreamContent(new EndlessStream());
        using var client = Client(HttpStatusCode.OK, content);

        using var response = await client.SendAsync(new HttpRequestMessage(HttpMethod.Get, "http://store/cache/key"), HttpCompletionOption.ResponseHeadersRead);

        Assert.Same(content, response.Content);
    }

    [Fact]
    public async Task An_endless_listing_fails_past_its_bound_naming_the_status()
    {
        using var client = Client(HttpStatusCode.OK, new StreamContent(new EndlessStream()));

        using var response = await client.SendAsync(new HttpRequestMessage(HttpMethod.Get, "http://store/cache?prefix=a&max-keys=1000"), HttpCompletionOption.ResponseHeadersRead);
        await using var body = await response.Content.ReadAsStreamAsync();

        var failure = await Assert.ThrowsAsync<StoreAnswerTooLongException>(() => body.CopyToAsync(Stream.Null));
        Assert.Equal(HttpStatusCode.OK, failure.Status);
    }

    [Fact]
    public async Task An_error_body_is_read_up_to_64_KiB_and_not_a_byte_more()
    {
        using var exact = Client(HttpStatusCode.InternalServerError, new StreamContent(new MemoryStream(new byte[64 * 1024])));
        using var whole = await exact.SendAsync(new HttpRequestMessage(HttpMethod.Put, "http://store/cache/key"));
        Assert.Equal(64 * 1024, (await whole.Content.ReadAsByteArrayAsync()).Length);

        using var longer = Client(HttpStatusCode.InternalServerError, new StreamContent(new MemoryStream(new byte[64 * 1024 + 1])));
        var failure = await Assert.ThrowsAnyAsync<Exception>(() => longer.SendAsync(new HttpRequestMessage(HttpMethod.Delete, "http://store/cache/key")));
        var tooLong = Assert.IsType<StoreAnswerTooLongException>(failure is HttpRequestException { InnerException: { } inner } ? inner : failure);
        Assert.Contains("HTTP 500", tooLong.Message, StringComparison.Ordinal);
    }

    private static HttpClient Client(HttpStatusCode status, HttpContent content) =>
        new(new StoreHttpClients.BoundedAnswers(new Answering(status, content)));

    private sealed class Answering(HttpStatusCode status, HttpContent content) : HttpMessageHandler
    {
        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken) =>
            Task.FromResult(new HttpResponseMessage(status) { Content = content, RequestMessage = request });
    }

    /// <summary>A body that never ends, as a broken store's or a hostile proxy's.</summary>
    private sealed class EndlessStream : Stream
    {
        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => 0; set => throw new NotSupportedException(); }
        public override int Read(byte[] buffer, int offset, int count) => count;
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}
