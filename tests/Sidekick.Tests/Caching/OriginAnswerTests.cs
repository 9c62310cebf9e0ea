using Microsoft.AspNetCore.Http;
using Sidekick.Caching;
using Yarp.ReverseProxy.Forwarder;

namespace Sidekick.Tests.Caching;

/// <summary>
/// Why a fill's body stopped: the client leaving is told from the origin failing by the forwarder's verdict, not only
/// by RequestAborted, which a closed connection reaches later, through the thread pool.
/// </summary>
public sealed class OriginAnswerTests
{
    [Theory]
    [InlineData(ForwarderError.ResponseBodyClient, false, true)]
    [InlineData(ForwarderError.ResponseBodyCanceled, false, true)]
    [InlineData(ForwarderError.ResponseBodyDestination, false, false)]
    [InlineData(ForwarderError.None, false, false)]
    [InlineData(ForwarderError.None, true, true)]
    [InlineData(ForwarderError.ResponseBodyDestination, true, true)]
    public void A_body_cut_by_the_client_counts_as_the_client_leaving_before_the_abort_token_says_so(ForwarderError error, bool aborted, bool clientLeft)
    {
        using var abort = new CancellationTokenSource();
        var context = new DefaultHttpContext { RequestAborted = abort.Token };
        if (error != ForwarderError.None)
        {
            context.Features.Set<IForwarderErrorFeature>(new Verdict(error));
        }

        if (aborted)
        {
            abort.Cancel();
        }

        Assert.Equal(clientLeft, OriginAnswer.ClientLeft(context));
    }

    private sealed class Verdict(ForwarderError error) : IForwarderErrorFeature
    {
        public ForwarderError Error { get; } = error;

        public Exception? Exception => null;
    }
}
