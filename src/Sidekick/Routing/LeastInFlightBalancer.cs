using Sidekick.Topology;

namespace Sidekick.Routing;

/// <summary>
/// Fewest in-flight requests wins; ties are broken uniformly at random (reservoir sampling), so a lightly
/// loaded cluster still spreads over every node. This is what upstream's "least" intended (its tie-break
/// code could keep a busier backend). A backend warming up after a recovery counts as more loaded than it
/// is, in proportion to how far it is from the end of its warm-up.
/// </summary>
internal sealed class LeastInFlightBalancer(long warmupMilliseconds = 0) : IBalancer
{
    public string Name => "least";

    public Backend? Pick(Backend[] backends)
    {
        Backend? chosen = null;
        var fewest = double.MaxValue;
        var ties = 0;
        foreach (var backend in backends)
        {
            if (!backend.IsServing)
            {
                continue;
            }

            var load = Load(backend, backend.InFlight);
            if (load < fewest)
            {
                fewest = load;
                chosen = backend;
                ties = 1;
            }
            else if (load == fewest && Random.Shared.Next(++ties) == 0)
            {
                chosen = backend;
            }
        }

        return chosen;
    }

    /// <summary>
    /// Requests picked at the same moment all see the same counts and may claim the same idle backend;
    /// a claim is given back when another backend is now strictly less loaded than the claimed one was.
    /// </summary>
    public bool ShouldRepick(Backend[] backends, Backend claimed)
    {
        var claimedLoad = Load(claimed, claimed.InFlight - 1);
        foreach (var backend in backends)
        {
            if (backend != claimed && backend.IsServing && Load(backend, backend.InFlight) < claimedLoad)
            {
                return true;
            }
        }

        return false;
    }

    private double Load(Backend backend, int inFlight)
    {
        double load = inFlight;
        if (warmupMilliseconds > 0)
        {
            var factor = backend.WarmupFactor(warmupMilliseconds);
            if (factor < 1)
            {
                load = ((load + 1) / factor) - 1;
            }
        }

        return load;
    }
}
