using Sidekick.Forwarding;
using Sidekick.Observability;
using Sidekick.Topology;

namespace Sidekick.Hosting;

/// <summary>
/// Paths sidekick answers itself instead of proxying. Matching is exact and cheap; everything else is
/// proxied untouched.
/// </summary>
internal sealed class LocalEndpoints(TopologyStore topology, Func<string?> certificatePem, PrometheusExporter metrics, Caching.ResponseCache? cache)
{
    public const string MetricsPath = "/.prometheus/metrics";
    public const string HealthPath = "/v1/health";
    public const string CertificatesPath = "/v1/certificates";

    /// <summary>Handles the request when it targets a local path; returns false to let it be proxied.</summary>
    public bool TryHandle(HttpContext context, out Task handled)
    {
        var path = context.Request.Path.Value;
        if (path == HealthPath)
        {
            handled = Health(context);
            return true;
        }

        if (path == MetricsPath)
        {
            context.Response.ContentType = PrometheusExporter.ContentType;
            handled = context.Response.WriteAsync(metrics.Render());
            return true;
        }

        if (path == StateEndpoint.Path && HttpMethods.IsGet(context.Request.Method))
        {
            handled = StateEndpoint.WriteAsync(context, topology.Current, cache);
            return true;
        }

        if (path == CertificatesPath && HttpMethods.IsGet(context.Request.Method))
        {
            handled = Certificates(context);
            return true;
        }

        handled = Task.CompletedTask;
        return false;
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
