using Sidekick.Forwarding.Http1;

namespace Sidekick.Tests.Forwarding;

/// <summary>
/// The receive size of a long response body: 64 KiB, doubling to 1 MiB for bodies with more than 4 MiB to come, within
/// a process-wide budget that every body gives back what it took from when it ends.
/// </summary>
public sealed class ReceiveWindowTests
{
    private const long MiB = 1024 * 1024;

    [Fact]
    public void A_long_body_grows_its_receives_from_64_KiB_to_1_MiB_and_gives_the_budget_back_at_its_end()
    {
        var budget = new ReceiveBudget(16 * MiB);
        var window = new ReceiveWindow(budget);
        var sizes = new List<int> { window.Size };
        for (var i = 0; i < 8; i++)
        {
            window.Filled(remaining: 100 * MiB);
            sizes.Add(window.Size);
        }

        Assert.Equal([64 * 1024, 128 * 1024, 256 * 1024, 512 * 1024, 1024 * 1024, 1024 * 1024, 1024 * 1024, 1024 * 1024, 1024 * 1024], sizes);
        Assert.Equal(16 * MiB - (MiB - 64 * 1024), budget.Left);
        window.Close();
        Assert.Equal(16 * MiB, budget.Left);
        Assert.Equal(ReceiveWindow.Initial, window.Size);
    }

    [Theory]
    [InlineData(1 * MiB)] // a 1 MiB response (the benchmark's largest row) never grows
    [InlineData(4 * MiB)]
    public void A_body_with_little_left_keeps_64_KiB_receives(long remaining)
    {
        var budget = new ReceiveBudget(16 * MiB);
        var window = new ReceiveWindow(budget);
        window.Filled(remaining);
        Assert.Equal(ReceiveWindow.Initial, window.Size);
        Assert.Equal(16 * MiB, budget.Left);
    }

    [Fact]
    public void Bodies_beyond_the_budget_go_on_at_the_size_they_have()
    {
        // 2 MiB of budget: one body at 1 MiB takes 960 KiB of it; a second one grows only as far as what is left allows.
        var budget = new ReceiveBudget(2 * MiB);
        var first = new ReceiveWindow(budget);
        var second = new ReceiveWindow(budget);
        for (var i = 0; i < 5; i++)
        {
            first.Filled(100 * MiB);
        }

        for (var i = 0; i < 5; i++)
        {
            second.Filled(100 * MiB);
        }

        Assert.Equal(1024 * 1024, first.Size);
        Assert.Equal(1024 * 1024, second.Size);
        var third = new ReceiveWindow(budget);
        for (var i = 0; i < 5; i++)
        {
            third.Filled(100 * MiB);
        }

        Assert.Equal(128 * 1024, third.Size); // 128 KiB was left: one doubling from 64 KiB (taking 64), not a second (128)
        Assert.Equal(64 * 1024, budget.Left);
        first.Close();
        second.Close();
        third.Close();
        Assert.Equal(2 * MiB, budget.Left);
    }
}
