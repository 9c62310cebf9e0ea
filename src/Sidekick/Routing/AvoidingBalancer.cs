using Sidekick.Topology;

namespace Sidekick.Routing;

/// <summary>
/// A balancer that keeps off the backends a request already failed on while another serves: a retry or a
/// body cut short goes elsewhere, even though one broken response does not mark its backend down. Made
/// only on those rare paths.
/// </summary>
internal sealed class AvoidingBalancer(IBalancer inner, List<Backend> avoided) : IBalancer
{
    public string Name => inner.Name;

    public Backend? Pick(Backend[] backends)
    {
        var chosen = inner.Pick(backends);
        if (chosen is null || !avoided.Contains(chosen))
        {
            return chosen;
        }

        Backend? other = null;
        foreach (var backend in backends)
        {
            if (backend.IsServing && !avoided.Contains(backend) && (other is null || backend.InFlight < other.InFlight))
            {
                other = backend;
            }
        }

        return other ?? chosen;
    }
}
