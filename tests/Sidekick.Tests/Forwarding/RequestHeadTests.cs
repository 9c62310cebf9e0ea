using System.Text;
using Microsoft.AspNetCore.Http;
using Sidekick.Forwarding.Http1;

namespace Sidekick.Tests.Forwarding;

public sealed class RequestHeadTests
{
    [Fact]
    public void Header_values_reach_the_backend_as_UTF_8_whether_ASCII_or_not()
    {
        // ASCII values take a narrowing shortcut; anything else must still be the UTF-8 the encoder writes.
        var context = new DefaultHttpContext();
        context.Request.Method = "GET";
        context.Request.Headers.Host = "example";
        context.Request.Headers["X-Ascii"] = "plain value";
        context.Request.Headers["X-Wide"] = "caf\u00e9 \u2713 end";
        using var head = RequestHead.Write(context, "/x?q=1", "backend:9000", 0);
        var bytes = head.Bytes.ToArray();

        Assert.StartsWith("GET /x?q=1 HTTP/1.1\r\nHost: example\r\n", Encoding.ASCII.GetString(bytes), StringComparison.Ordinal);
        Assert.True(bytes.AsSpan().IndexOf("X-Ascii: plain value\r\n"u8) >= 0, Encoding.Latin1.GetString(bytes));
        Assert.True(bytes.AsSpan().IndexOf("X-Wide: caf\u00e9 \u2713 end\r\n"u8) >= 0, Encoding.Latin1.GetString(bytes));
    }
}
