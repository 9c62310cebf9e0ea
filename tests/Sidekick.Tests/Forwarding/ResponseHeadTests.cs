using System.Text;
using Microsoft.AspNetCore.Http;
using Sidekick.Forwarding;
using Sidekick.Forwarding.Http1;

namespace Sidekick.Tests.Forwarding;

public sealed class ResponseHeadTests
{
    [Theory]
    [InlineData("HTTP/1.1 200 OK\r\nA: 1\r\n\r\nbody\n\nmore", 25)]
    [InlineData("HTTP/1.1 200 OK\r\n\r\n", 19)]
    [InlineData("HTTP/1.1 200 OK\nA: 1\n\nbody", 22)]
    [InlineData("HTTP/1.1 200 OK\r\nA: 1\r\n\nbody", 24)] // CRLF fields, a bare LF blank line
    [InlineData("HTTP/1.1 200 OK\nA: 1\n\r\nbody", 23)] // bare LF fields, a CRLF blank line
    [InlineData("HTTP/1.1 200 OK\r\nA: 1\r\n", -1)]
    [InlineData("HTTP/1.1 200 OK\r\nA: 1\r\n\r", -1)]
    [InlineData("HTTP/1.1 200 OK\r\nA: 1", -1)]
    [InlineData("", -1)]
    public void The_head_ends_at_the_first_empty_line(string data, int expected) =>
        Assert.Equal(expected, ResponseHead.FindEnd(Encoding.ASCII.GetBytes(data)));

    [Theory]
    [InlineData("HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\nbody\r\n\r\nmore")]
    [InlineData("HTTP/1.1 200 OK\nA: 1\nB: 2\n\nbody")] // bare LF throughout
    [InlineData("HTTP/1.1 200 OK\r\nA: 1\n\r\nbody")] // mixed
    [InlineData("HTTP/1.1 200 OK\r\nA: one\r\n two\r\n\r\n")] // obs-fold
    [InlineData("HTTP/1.1 200 OK\r\nA: a\rb\r\n\r\n")] // a bare CR in a value
    [InlineData("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nA: 1\r\n\r\nbody")]
    [InlineData("HTTP/1.1 100 Continue\n\nHTTP/1.1 200 OK\nA: 1\n\nbody")]
    [InlineData("\n\nHTTP/1.1 200 OK\r\n\r\n")] // what the first, odd head is does not matter: where it ends does
    public void A_head_in_pieces_ends_where_the_whole_head_does(string wire)
    {
        // As the HTTP/1.1 path reads: the search goes on after each receive, and a 1xx interim head is consumed
        // and the next one searched from scratch. Every split, so a CRLF falls across two pieces too.
        var bytes = Encoding.ASCII.GetBytes(wire);
        var whole = HeadEnds(bytes, [bytes.Length]);
        Assert.NotEmpty(whole);
        for (var piece = 1; piece <= 4; piece++)
        {
            Assert.Equal(whole, HeadEnds(bytes, Enumerable.Repeat(piece, (bytes.Length + piece - 1) / piece)));
        }

        for (var split = 1; split < bytes.Length; split++)
        {
            Assert.Equal(whole, HeadEnds(bytes, [split, bytes.Length - split]));
        }
    }

    [Fact]
    public void A_head_fed_in_many_pieces_is_searched_once_not_once_per_piece()
    {
        // A backend that sends a head of many short lines, one TCP segment each: searching from byte 0 after each
        // receive cost sidekick 140 CPU-seconds for 160,000 lines. The search goes on where it stopped instead.
        var bytes = Encoding.ASCII.GetBytes("HTTP/1.1 200 OK\r\n" + string.Concat(Enumerable.Repeat("a:b\r\n", BackendLimits.MaxResponseHeadFieldLines)) + "\r\n");
        foreach (var piece in new[] { 1, 3, 5, 64 })
        {
            var scan = default(HeadScan);
            var end = -1;
            for (var received = Math.Min(piece, bytes.Length); end < 0; received = Math.Min(received + piece, bytes.Length))
            {
                end = ResponseHead.FindEnd(bytes.AsSpan(0, received), ref scan);
            }

            Assert.Equal(bytes.Length, end);
            Assert.True(scan.Searched <= bytes.Length, $"{scan.Searched:N0} bytes searched for a head of {bytes.Length:N0} in pieces of {piece}");
        }
    }

    [Theory]
    [InlineData("a:b\r\n")]
    [InlineData("a:b\n")]
    [InlineData(" folded\r\n")]
    public void A_head_of_more_field_lines_than_the_limit_is_refused(string line)
    {
        string Head(int lines) => "HTTP/1.1 200 OK\r\nA: 1\r\n" + string.Concat(Enumerable.Repeat(line, lines - 1)) + "\r\nok";
        var atLimit = Encoding.ASCII.GetBytes(Head(BackendLimits.MaxResponseHeadFieldLines));
        Assert.Equal(atLimit.Length - 2, ResponseHead.FindEnd(atLimit));
        var scan = default(HeadScan);
        Assert.Equal(-1, ResponseHead.FindEnd(atLimit.AsSpan(0, atLimit.Length - 4), ref scan));
        Assert.Equal(atLimit.Length - 2, ResponseHead.FindEnd(atLimit, ref scan));

        // Refused as soon as the line past the limit is complete, whole or in pieces, before its blank line comes.
        var over = Encoding.ASCII.GetBytes(Head(BackendLimits.MaxResponseHeadFieldLines + 1));
        var refused = Assert.Throws<HttpRequestException>(() => ResponseHead.FindEnd(over));
        Assert.Equal(HttpRequestError.InvalidResponse, refused.HttpRequestError);
        Assert.Throws<HttpRequestException>(() => ResponseHead.FindEnd(over.AsSpan(0, over.Length - 4)));
        Assert.Throws<HttpRequestException>(() => HeadEnds(over, Enumerable.Repeat(7, over.Length / 7 + 1)));
    }

    /// <summary>
    /// The ends of the heads in <paramref name="wire"/> received in pieces of the given sizes, each 1xx head consumed
    /// as the HTTP/1.1 path does, up to the first final one.
    /// </summary>
    private static List<int> HeadEnds(byte[] wire, IEnumerable<int> pieces)
    {
        var ends = new List<int>();
        var (consumed, received) = (0, 0);
        var scan = default(HeadScan);
        foreach (var piece in pieces)
        {
            received = Math.Min(received + piece, wire.Length);
            while (ResponseHead.FindEnd(wire.AsSpan(consumed, received - consumed), ref scan) is var end and >= 0)
            {
                ends.Add(consumed + end);
                if (ResponseHead.PeekStatus(wire.AsSpan(consumed, end)) is >= 200 or < 100)
                {
                    return ends;
                }

                consumed += end;
                scan = default;
            }
        }

        return ends;
    }

    [Fact]
    public void The_framing_indexes_name_their_fields()
    {
        Assert.Equal("Content-Length", ResponseHeaderValues.NameAt(ResponseHeaderValues.ContentLength));
        Assert.Equal("Connection", ResponseHeaderValues.NameAt(ResponseHeaderValues.Connection));
        Assert.Equal("Transfer-Encoding", ResponseHeaderValues.NameAt(ResponseHeaderValues.TransferEncoding));
        Assert.Equal(ResponseHeaderValues.ContentLength, ResponseHeaderValues.IndexOf("content-LENGTH"u8));
        Assert.Equal(-1, ResponseHeaderValues.IndexOf("Content-Lengthy"u8));
        Assert.Equal(-1, ResponseHeaderValues.IndexOf("Xontent-Length"u8));
    }

    [Fact]
    public void A_known_name_matches_in_any_letter_case_and_nowhere_else()
    {
        // Flipping bit 0x20 of a letter changes only its case; of any other byte it makes another byte (CR for
        // '-', a control character for a digit): every such spelling must be an unknown name.
        for (var known = 0; known < ResponseHeaderValues.KnownCount; known++)
        {
            var name = Encoding.ASCII.GetBytes(ResponseHeaderValues.NameAt(known));
            Assert.Equal(known, ResponseHeaderValues.IndexOf(Encoding.ASCII.GetBytes(ResponseHeaderValues.NameAt(known).ToUpperInvariant())));
            Assert.Equal(known, ResponseHeaderValues.IndexOf(Encoding.ASCII.GetBytes(ResponseHeaderValues.NameAt(known).ToLowerInvariant())));
            for (var at = 0; at < name.Length; at++)
            {
                foreach (var flip in new byte[] { 0x20, 0x01, 0x80 })
                {
                    var spelled = (byte[])name.Clone();
                    spelled[at] ^= flip;
                    var expected = flip == 0x20 && char.IsAsciiLetter((char)name[at]) ? known : -1;
                    Assert.True(expected == ResponseHeaderValues.IndexOf(spelled), $"{Encoding.Latin1.GetString(spelled)} for {ResponseHeaderValues.NameAt(known)}");
                }
            }
        }
    }

    [Theory]
    [InlineData("", "Set-Cookie: a=1\r\nServer: nginx\r\nset-cookie: b=2", "Set-Cookie", "a=1,b=2")]
    [InlineData("Server=SideKick", "Server: nginx\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2", "Server", "SideKick,nginx")]
    [InlineData("Server=SideKick", "Set-Cookie: a=1\r\nSet-Cookie: b=2", "Set-Cookie", "a=1,b=2")]
    [InlineData("Cache-Control=private", "Cache-Control: max-age=5", "Cache-Control", "private,max-age=5")]
    [InlineData("Server=SideKick;Vary=Accept", "Server: nginx\r\nVary: Origin", "Vary", "Accept,Origin")]
    [InlineData("Vary=Accept", "Server: nginx\r\nVary: Origin", "Server", "nginx")]
    public void A_field_set_before_or_repeated_in_the_head_keeps_every_value(string preset, string fields, string name, string expected)
    {
        var response = new DefaultHttpContext().Response;
        foreach (var pair in preset.Split(';', StringSplitOptions.RemoveEmptyEntries))
        {
            response.Headers[pair.Split('=')[0]] = pair.Split('=', 2)[1];
        }

        Apply($"HTTP/1.1 200 OK\r\n{fields}\r\nContent-Length: 0\r\n\r\n", response);
        Assert.Equal(expected, response.Headers[name].ToString());
    }

    [Fact]
    public void End_to_end_fields_are_copied_and_connection_fields_dropped()
    {
        var response = new DefaultHttpContext().Response;
        response.Headers["X-Preset"] = "proxy";
        var head = Apply(
            "HTTP/1.1 201 Created\r\nServer:  nginx \r\nContent-Length: 4\r\nConnection: keep-alive, X-Secret\r\n" +
            "X-Secret: s\r\nKeep-Alive: timeout=5\r\nx-preset: backend\r\nX-Multi: one\r\nX-Multi: two\r\n\r\n",
            response);

        Assert.Equal(201, response.StatusCode);
        Assert.Equal(4, response.ContentLength);
        Assert.Equal("nginx", response.Headers.Server.ToString());
        Assert.Equal("proxy,backend", response.Headers["X-Preset"].ToString());
        Assert.Equal("one,two", response.Headers["X-Multi"].ToString());
        Assert.False(response.Headers.ContainsKey("X-Secret"));
        Assert.False(response.Headers.ContainsKey("Keep-Alive"));
        Assert.False(response.Headers.ContainsKey("Connection"));
        Assert.Equal(BodyFraming.ContentLength, head.Framing);
        Assert.True(head.Reusable);
    }

    [Fact]
    public void A_value_appended_to_ours_is_the_backends_own_each_time()
    {
        // One memory serves every response from a backend: the pair it reuses must follow a changed value.
        var values = new ResponseHeaderValues();
        string ServerAfter(string backendServer)
        {
            var response = new DefaultHttpContext().Response;
            response.Headers.Server = "SideKick";
            Apply($"HTTP/1.1 200 OK\r\nServer: {backendServer}\r\nContent-Length: 0\r\n\r\n", response, values);
            return response.Headers.Server.ToString();
        }

        Assert.Equal("SideKick,nginx", ServerAfter("nginx"));
        Assert.Equal("SideKick,nginx", ServerAfter("nginx"));
        Assert.Equal("SideKick,MinIO", ServerAfter("MinIO"));
        Assert.Equal("SideKick,nginx", ServerAfter("nginx"));
    }

    [Theory]
    [InlineData("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n", "ContentLength", false)]
    [InlineData("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", "ContentLength", false)]
    [InlineData("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\n", "ContentLength", true)]
    [InlineData("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "Chunked", true)]
    [InlineData("HTTP/1.1 200 OK\r\n\r\n", "UntilClose", false)]
    [InlineData("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", "None", true)]
    public void Framing_and_reuse_follow_the_head(string wire, string framing, bool reusable)
    {
        var head = Apply(wire, new DefaultHttpContext().Response);
        Assert.Equal(framing, head.Framing.ToString());
        Assert.Equal(reusable, head.Reusable);
    }

    [Theory]
    [InlineData("Keep-Alive: timeout=5\r\n", 5)]
    [InlineData("keep-alive: max=1000, TIMEOUT=15\r\n", 15)]
    [InlineData("Keep-Alive:  timeout=2 ,max=5\r\n", 2)]
    [InlineData("Keep-Alive: max=100\r\n", 0)]
    [InlineData("Keep-Alive: timeout=-5\r\n", 0)]
    [InlineData("Keep-Alive: timeout=5s\r\n", 0)]
    [InlineData("Keep-Alive: timeout=\r\n", 0)]
    [InlineData("", 0)]
    public void The_backends_keep_alive_timeout_is_read_and_the_header_not_passed_on(string field, int seconds)
    {
        var response = new DefaultHttpContext().Response;
        var head = Apply($"HTTP/1.1 200 OK\r\n{field}Content-Length: 0\r\n\r\n", response);
        Assert.Equal(seconds, head.KeepAliveSeconds);
        Assert.False(response.Headers.ContainsKey("Keep-Alive"));
    }

    [Fact]
    public void A_head_with_more_fields_than_fit_on_the_stack_is_copied_whole()
    {
        var fields = string.Concat(Enumerable.Range(0, 100).Select(i => $"X-Field-{i}: {i}\r\n"));
        var response = new DefaultHttpContext().Response;
        Apply($"HTTP/1.1 200 OK\r\n{fields}Content-Length: 0\r\n\r\n", response);
        Assert.Equal(100, response.Headers.Count(h => h.Key.StartsWith("X-Field-", StringComparison.Ordinal)));
        Assert.Equal("99", response.Headers["X-Field-99"].ToString());
    }

    [Theory]
    [InlineData("HTTP/1.1 200 OK\r\nX-Good: 1\r\nBad Name: x\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\n folded first\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n 2\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n")]
    [InlineData("HTTP/1.1 200 O\0K\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nX-Good: 1\r\n: no name\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: 1\r\ncontent-length: 2\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")]
    [InlineData("HTTP/1.1 99 Odd\r\n\r\n")]
    public void An_untrustworthy_head_throws_before_anything_is_applied(string wire)
    {
        var response = new DefaultHttpContext().Response;
        var error = Assert.Throws<HttpRequestException>(() => Apply(wire, response));
        Assert.Equal(HttpRequestError.InvalidResponse, error.HttpRequestError);
        Assert.Empty(response.Headers);
    }

    [Theory]
    [InlineData("X-A: a\rb\r\n", "X-A", "a b")]
    [InlineData("X-A: a\0b\r\n", "X-A", "a b")]
    [InlineData("X-A: one\r\n two\r\n", "X-A", "one   two")]
    [InlineData("X-A: one\r\n\ttwo\r\n three\r\n", "X-A", "one  \ttwo   three")]
    [InlineData("X-A : spaced\r\n", "X-A", "spaced")]
    public void Values_a_proxy_may_repair_are_repaired_as_httpclient_does(string field, string name, string expected)
    {
        // RFC 9110 §5.5 (NUL, bare CR: a space), RFC 9112 §5.2 (obs-fold: spaces), §5.1 (no space before the colon).
        var response = new DefaultHttpContext().Response;
        Apply($"HTTP/1.1 200 OK\r\n{field}Content-Length: 0\r\n\r\n", response);
        Assert.Equal(expected, response.Headers[name].ToString());
        Assert.Equal(0, response.ContentLength);
    }

    private static ResponseHead Apply(string wire, HttpResponse response, ResponseHeaderValues? values = null)
    {
        var bytes = Encoding.Latin1.GetBytes(wire);
        return ResponseHead.Apply(bytes.AsSpan(0, ResponseHead.FindEnd(bytes)), response, isHeadRequest: false, values ?? new ResponseHeaderValues());
    }
}
