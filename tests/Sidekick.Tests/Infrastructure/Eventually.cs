using System.Runtime.CompilerServices;

namespace Sidekick.Tests;

/// <summary>
/// Polls a condition with a generous deadline instead of sleeping a fixed time: a loaded machine only makes
/// a test slower, never wrong, and a failure names what it waited for.
/// </summary>
internal static class Eventually
{
    public static async Task WaitUntilAsync(Func<bool> condition, int timeoutMs = 15000, [CallerArgumentExpression(nameof(condition))] string? what = null)
    {
        var deadline = Environment.TickCount64 + timeoutMs;
        while (!condition())
        {
            if (Environment.TickCount64 > deadline)
            {
                throw new TimeoutException($"not reached within {timeoutMs} ms: {what}");
            }

            await Task.Delay(10);
        }
    }
}
