using Sidekick.Topology;

namespace Sidekick.Routing;

/// <summary>Uniform choice among the up backends, without copying the list.</summary>
internal sealed class RandomBalancer : IBalancer
{
    public string Name => "random";

    public Backend? Pick(Backend[] backends)
    {
        Backend? chosen = null;
        var seen = 0;
        foreach (var backend in backends)
        {
            if (backend.IsServing && Random.Shared.Next(++seen) == 0)
            {
                chosen = backend;
            }
        }

        return chosen;
    }
}
