using Sidekick.Topology;

namespace Sidekick.Routing;

/// <summary>Picks one up backend of a site for a request. Implementations must not allocate or lock.</summary>
internal interface IBalancer
{
    /// <summary>The name used on the command line (<c>--host-balance</c>).</summary>
    string Name { get; }

    /// <summary>Returns an up backend of <paramref name="backends"/>, or null when none is up.</summary>
    Backend? Pick(Backend[] backends);

    /// <summary>
    /// After <paramref name="claimed"/> was picked and its in-flight count raised: whether a concurrent
    /// pick made another backend the better choice, so the claim should be given back and the pick redone.
    /// </summary>
    bool ShouldRepick(Backend[] backends, Backend claimed) => false;
}

/// <summary>Looks a balancer up by its command-line name.</summary>
internal static class Balancers
{
    public static readonly string[] Names = ["least", "random"];

    public static IBalancer Create(string name, TimeSpan slowStart = default) => name switch
    {
        "" or "least" => new LeastInFlightBalancer((long)slowStart.TotalMilliseconds),
        "random" => new RandomBalancer(),
        _ => throw new ArgumentOutOfRangeException(nameof(name), name, "unknown balancer"),
    };
}
