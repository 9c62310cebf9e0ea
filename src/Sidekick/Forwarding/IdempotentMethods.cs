namespace Sidekick.Forwarding;

/// <summary>
/// The request methods RFC 9110 §9.2.2 defines as idempotent: sending one twice has the effect of sending it
/// once, so a request that may have reached a backend can be sent again. Unknown methods are not assumed to be.
/// </summary>
internal static class IdempotentMethods
{
    public static bool Contains(string method) =>
        HttpMethods.IsGet(method) || HttpMethods.IsHead(method) || HttpMethods.IsPut(method) ||
        HttpMethods.IsDelete(method) || HttpMethods.IsOptions(method) || HttpMethods.IsTrace(method);
}
