using Sidekick.Topology;

namespace Sidekick.Routing;

/// <summary>
/// Fewest in-flight requests wins; ties are broken uniformly at random (reservoir sampling), so a lightly
/// loaded cluster still spreads over every node. This is what upstream's "least" intended (its tie-break
/// code could keep a busier backend).
/// </summary>
internal sealed class LeastInFlightBalancer : IBalancer
{
    public string Name => "least";

    public Backend? Pick(Backend[] backends)
    {
        Backend? chosen = null;
        var fewest = int.MaxValue;
        var ties = 0;
        foreach (var backend in backends)
        {
            if (!backend.IsUp)
            {
                continue;
            }

            var inFlight = backend.InFlight;
            if (inFlight < fewest)
            {
                fewest = inFlight;
                chosen = backend;
                ties = 1;
            }
            else if (inFlight == fewest && Random.Shared.Next(++ties) == 0)
            {
                chosen = backend;
            }
        }

        return chosen;
    }
}
