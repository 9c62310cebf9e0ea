using System.Runtime.CompilerServices;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http.Features;

namespace Sidekick.Forwarding;

/// <summary>
/// Reads the server features every proxied request consults, at a fraction of what <c>Features.Get&lt;T&gt;()</c>
/// costs under Native AOT. That call is a generic virtual method: each one resolves its target at run time
/// (<c>GVMLookupForSlot</c>) and then runs Kestrel's lookup as shared generic code, whose type tests go through a
/// run-time dictionary, and ends in a cast that scans the interfaces of Kestrel's connection type; callgrind
/// counted about 160 instructions a call, nine calls per plain request. Here the lookup is the collection's
/// non-generic indexer with a type known at compile time, and the cast is checked once per implementing type
/// (<see cref="Verified{T}"/>) rather than on every request.
/// </summary>
internal static class ServerFeatures
{
    public static IHttpRequestFeature? Request(IFeatureCollection features) =>
        Verified<IHttpRequestFeature>.Of(features[typeof(IHttpRequestFeature)]);

    public static IHttpRequestBodyDetectionFeature? BodyDetection(IFeatureCollection features) =>
        Verified<IHttpRequestBodyDetectionFeature>.Of(features[typeof(IHttpRequestBodyDetectionFeature)]);

    public static IHttpRequestLifetimeFeature? Lifetime(IFeatureCollection features) =>
        Verified<IHttpRequestLifetimeFeature>.Of(features[typeof(IHttpRequestLifetimeFeature)]);

    public static IHttpResponseBodyFeature? ResponseBody(IFeatureCollection features) =>
        Verified<IHttpResponseBodyFeature>.Of(features[typeof(IHttpResponseBodyFeature)]);

    public static IPersistentStateFeature? PersistentState(IFeatureCollection features) =>
        Verified<IPersistentStateFeature>.Of(features[typeof(IPersistentStateFeature)]);

    public static IHttpUpgradeFeature? Upgrade(IFeatureCollection features) =>
        Verified<IHttpUpgradeFeature>.Of(features[typeof(IHttpUpgradeFeature)]);

    /// <summary>Whether the request may have content; true when the server does not say (as ASP.NET assumes).</summary>
    public static bool CanHaveBody(IFeatureCollection features) => BodyDetection(features)?.CanHaveBody ?? true;

    /// <summary>
    /// The cast of a feature object to <typeparamref name="T"/>, remembered for the last type that passed it. Kestrel
    /// answers every one of these features with the same connection object, so after the first request the check
    /// is one comparison of type handles; any other type (a feature a middleware put in front, another server)
    /// takes the ordinary cast, which also keeps an object of the wrong type out.
    /// </summary>
    private static class Verified<T>
        where T : class
    {
        // The type handle of the last object that was a T; one pointer, so a torn read cannot happen.
        private static nint s_type;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static T? Of(object? feature)
        {
            if (feature is null)
            {
                return null;
            }

            var type = Type.GetTypeHandle(feature).Value;
            if (type == s_type)
            {
                return Unsafe.As<T>(feature);
            }

            if (feature is not T checkedFeature)
            {
                return null;
            }

            s_type = type;
            return checkedFeature;
        }
    }
}
