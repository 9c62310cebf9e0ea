using Microsoft.AspNetCore.Http.Features;
using Sidekick.Caching;
using Sidekick.Forwarding;
using Sidekick.Observability;
using Sidekick.Topology;

namespace Sidekick.Hosting;

/// <summary>
/// Paths sidekick answers itself instead of proxying. On the proxy port a request is local only when its raw
/// target is exactly a local path (a query is allowed, as upstream): Kestrel's decoded, dot-segment-free Path
/// would also take <c>/a/../../v1/state</c>, and the absolute form <c>http://x/v1/state</c>, which are S3 keys and
/// must reach a backend untouched. With <c>--admin-address</c> only <c>/v1/health</c> stays on the proxy port (where
/// upstream has it, for load balancers and probes of the client's host); the rest is served by
/// <see cref="HandleAdminAsync"/> on the admin listener, and the same paths on the proxy port are proxied.
/// </summary>
internal sealed class LocalEndpoints(
    TopologyStore topology, Func<string?> certificatePem, PrometheusExporter metrics, ResponseCache? cache, bool adminListener, bool diagnostics,
    Routing.PanicRule? panic = null, Routing.BackendWait? waits = null, TimeProvider? time = null)
{
    public const string MetricsPath = "/.prometheus/metrics";
    public const string HealthPath = "/v1/health";
    public const string CertificatesPath = "/v1/certificates";

    /// <summary>Handles a request on the proxy port when it targets a local path; returns false to let it be proxied.</summary>
    public bool TryHandle(HttpContext context, out Task handled)
    {
        // Path first (cheap, and true for every raw target that could match), then the raw target itself.
        var path = context.Request.Path.Value;
        if (path == HealthPath && IsRawTarget(context, HealthPath))
        {
            handled = Health(context);
            return true;
        }

        if (!adminListener && TryAdmin(context, path, out handled))
        {
            return true;
        }

        handled = Task.CompletedTask;
        return false;
    }

    /// <summary>The admin listener: the local paths, --pprof's routes when it is given, 404 for the rest (never proxied).</summary>
    public Task HandleAdminAsync(HttpContext context)
    {
        var path = context.Request.Path.Value;
        if (path == HealthPath && IsRawTarget(context, HealthPath))
        {
            return Health(context);
        }

        if (TryAdmin(context, path, out var handled))
        {
            return handled;
        }

        if (diagnostics && path is not null && (path == "/debug" || path.StartsWith("/debug/", StringComparison.Ordinal)))
        {
            return DiagnosticsEndpoints.HandleAsync(context, time ?? TimeProvider.System);
        }

        context.Response.StatusCode = StatusCodes.Status404NotFound;
        context.Response.ContentType = "text/plain; charset=utf-8";
        return context.Response.WriteAsync(
            $"not an admin path: this listener serves {HealthPath}, {StateEndpoint.Path}, {MetricsPath}, {CertificatesPath}{(diagnostics ? " and /debug/" : "")}; requests to the backends go to the proxy port\n");
    }

    private bool TryAdmin(HttpContext context, string? path, out Task handled)
    {
        // Only the methods that read are sidekick's, as for the state and the certificates: a PUT, POST or DELETE
        // to a local path is an S3 request like any other on the proxy port (a 404 on the admin listener).
        if (path == MetricsPath && (HttpMethods.IsGet(context.Request.Method) || HttpMethods.IsHead(context.Request.Method)) && IsRawTarget(context, MetricsPath))
        {
            context.Response.ContentType = PrometheusExporter.ContentType;
            handled = context.Response.WriteAsync(metrics.Render());
            return true;
        }

        if (path == StateEndpoint.Path && HttpMethods.IsGet(context.Request.Method) && IsRawTarget(context, StateEndpoint.Path))
        {
            handled = StateEndpoint.WriteAsync(context, topology.Current, panic?.Site ?? 0, waits?.Waiting ?? 0, cache);
            return true;
        }

        if (path == CertificatesPath && HttpMethods.IsGet(context.Request.Method) && IsRawTarget(context, CertificatesPath))
        {
            handled = Certificates(context);
            return true;
        }

        handled = Task.CompletedTask;
        return false;
    }

    /// <summary>Whether the request target as the client sent it is <paramref name="path"/>, with or without a query.</summary>
    private static bool IsRawTarget(HttpContext context, string path)
    {
        if (context.Features.Get<IHttpRequestFeature>()?.RawTarget is not { } target)
        {
            return true;
        }

        var query = target.IndexOf('?', StringComparison.Ordinal);
        return target.AsSpan(0, query < 0 ? target.Length : query).SequenceEqual(path);
    }

    private Task Health(HttpContext context)
    {
        if (topology.Current.ActiveSite is null)
        {
            return BackendErrorResponse.WriteAsync(context, BackendErrorResponse.AllOffline);
        }

        context.Response.Headers.Server = "SideKick";
        context.Response.StatusCode = StatusCodes.Status200OK;
        return Task.CompletedTask;
    }

    private Task Certificates(HttpContext context)
    {
        var pem = certificatePem();
        context.Response.Headers.ContentType = "text/plain; charset=utf-8";
        context.Response.Headers.XContentTypeOptions = "nosniff";
        if (pem is null)
        {
            context.Response.StatusCode = StatusCodes.Status404NotFound;
            return context.Response.WriteAsync("no configured certificates found\n");
        }

        return context.Response.WriteAsync(pem);
    }
}
