using Sidekick.Topology;

namespace Sidekick.Routing;

/// <summary>
/// A balancer that picks any backend but one while another serves: a body cut short continues elsewhere,
/// even though one cut body does not mark its backend down. Made only on that rare path.
/// </summary>
internal sealed class AvoidingBalancer(IBalancer inner, Backend avoided) : IBalancer
{
    public string Name => inner.Name;

    public Backend? Pick(Backend[] backends)
    {
        var chosen = inner.Pick(backends);
        if (chosen != avoided)
        {
            return chosen;
        }

        Backend? other = null;
        foreach (var backend in backends)
        {
            if (backend != avoided && backend.IsServing && (other is null || backend.InFlight < other.InFlight))
            {
                other = backend;
            }
        }

        return other ?? chosen;
    }
}
