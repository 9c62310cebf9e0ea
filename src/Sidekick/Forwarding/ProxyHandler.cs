using System.Net;
using Microsoft.AspNetCore.Http.Features;
using Sidekick.Health;
using Sidekick.Routing;
using Sidekick.Topology;
using Yarp.ReverseProxy.Forwarder;

namespace Sidekick.Forwarding;

/// <summary>
/// The request path: first site with an up backend, one backend by the balancer, forward, and learn from
/// the outcome (passive health, statistics).
/// </summary>
internal sealed class ProxyHandler(
    TopologyStore topology,
    IBalancer balancer,
    IHttpForwarder forwarder,
    HealthProber health,
    TimeProvider time)
{
    private static readonly ForwarderRequestConfig RequestConfig = new()
    {
        Version = HttpVersion.Version11,
        VersionPolicy = HttpVersionPolicy.RequestVersionOrLower,
        // Upstream has no response timeout; a long-idle stream (slow backend work on a huge object) must
        // not be cut by YARP's 100 s default.
        ActivityTimeout = TimeSpan.FromHours(1),
        AllowResponseBuffering = false,
    };

    public async Task ForwardAsync(HttpContext context)
    {
        var site = topology.Current.ActiveSite;
        var backend = site is null ? null : balancer.Pick(site.Backends);
        if (site is null || backend is null)
        {
            await BackendErrorResponse.WriteAsync(context, BackendErrorResponse.AllOffline);
            return;
        }

        context.Response.Headers.Server = "SideKick";
        var started = time.GetTimestamp();
        backend.BeginRequest();
        try
        {
            var error = await forwarder.SendAsync(context, backend.DestinationPrefix, site.Invoker, RequestConfig, SidekickTransformer.Instance);
            if (error != ForwarderError.None)
            {
                await OnErrorAsync(context, backend, error);
            }
        }
        finally
        {
            backend.EndRequest();
            backend.Stats.RecordCall(context.Response.StatusCode, time.GetElapsedTime(started), 0, 0);
        }
    }

    private async Task OnErrorAsync(HttpContext context, Backend backend, ForwarderError error)
    {
        var exception = context.Features.Get<IForwarderErrorFeature>()?.Exception;
        var clientGone = context.RequestAborted.IsCancellationRequested;
        var reason = exception is null ? error.ToString() : TransportErrors.Describe(exception);
        if (!clientGone && IsBackendFault(error))
        {
            health.ReportTransportFailure(backend, reason);
        }

        if (context.Response.HasStarted)
        {
            // Headers are out: the only honest signal left is to abort, never a silently truncated 200.
            context.Abort();
        }
        else if (!clientGone)
        {
            await BackendErrorResponse.WriteAsync(context, reason);
        }
    }

    /// <summary>Errors that say the backend (not the client) failed at the transport level.</summary>
    private static bool IsBackendFault(ForwarderError error) => error is
        ForwarderError.Request or
        ForwarderError.RequestTimedOut or
        ForwarderError.RequestBodyDestination or
        ForwarderError.ResponseBodyDestination or
        ForwarderError.UpgradeRequestDestination or
        ForwarderError.UpgradeResponseDestination;
}
