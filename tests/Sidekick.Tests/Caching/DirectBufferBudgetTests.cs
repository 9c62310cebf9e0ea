using Sidekick.Caching;

namespace Sidekick.Tests.Caching;

public sealed class DirectBufferBudgetTests
{
    [Fact]
    public void The_first_fills_at_once_get_large_buffers_and_the_others_small_ones_until_a_large_one_ends()
    {
        var budget = new DirectBufferBudget(largeFills: 2);

        var first = budget.Take();
        var second = budget.Take();
        var third = budget.Take();
        Assert.Equal([DirectBufferBudget.LargeBufferSize, DirectBufferBudget.LargeBufferSize, DirectBufferBudget.SmallBufferSize], [first, second, third]);

        // A small fill ending frees nothing large; a large one ending lets the next fill have large buffers.
        budget.Return(third);
        Assert.Equal(DirectBufferBudget.SmallBufferSize, budget.Take());
        budget.Return(first);
        Assert.Equal(DirectBufferBudget.LargeBufferSize, budget.Take());
        Assert.Equal(DirectBufferBudget.SmallBufferSize, budget.Take());
    }
}
