using System.Text;
using Microsoft.AspNetCore.Http;
using Sidekick.Forwarding.Http1;

namespace Sidekick.Tests.Forwarding;

/// <summary>A "close" connection option wins over "keep-alive", wherever it stands (RFC 9112 §9.6).</summary>
public sealed class ResponseConnectionOptionsTests
{
    [Theory]
    [InlineData("HTTP/1.1 200 OK\r\nConnection: close, keep-alive\r\nContent-Length: 1\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nConnection: close\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nConnection: close\r\nConnection: Keep-Alive\r\nTransfer-Encoding: chunked\r\n\r\n")]
    public void A_response_whose_Connection_says_close_is_never_pooled(string wire)
    {
        // The backend said it closes after this response; HttpClient (YARP's path) sees any "close" and does not reuse
        // the connection. The HTTP/1.1 path lets a later "keep-alive" undo it and pools a connection being closed.
        var bytes = Encoding.Latin1.GetBytes(wire);
        var head = ResponseHead.Apply(bytes.AsSpan(0, ResponseHead.FindEnd(bytes)), new DefaultHttpContext().Response, isHeadRequest: false, new ResponseHeaderValues());
        Assert.False(head.Reusable);
    }

    [Theory]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n")]
    [InlineData("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\n")]
    [InlineData("HTTP/1.0 200 OK\r\nConnection: x-other, keep-alive\r\nContent-Length: 1\r\n\r\n")]
    public void A_response_that_keeps_its_connection_alive_is_pooled(string wire)
    {
        var bytes = Encoding.Latin1.GetBytes(wire);
        var head = ResponseHead.Apply(bytes.AsSpan(0, ResponseHead.FindEnd(bytes)), new DefaultHttpContext().Response, isHeadRequest: false, new ResponseHeaderValues());
        Assert.True(head.Reusable);
    }

    [Fact]
    public void An_HTTP_1_0_response_without_keep_alive_is_not_pooled()
    {
        var bytes = Encoding.Latin1.GetBytes("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n");
        var head = ResponseHead.Apply(bytes.AsSpan(0, ResponseHead.FindEnd(bytes)), new DefaultHttpContext().Response, isHeadRequest: false, new ResponseHeaderValues());
        Assert.False(head.Reusable);
    }
}
