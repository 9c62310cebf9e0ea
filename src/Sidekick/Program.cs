using Sidekick.Hosting;

namespace Sidekick;

internal static class Program
{
    public static Task<int> Main(string[] args) => SidekickApp.RunAsync(args, Console.Out, Console.Error);
}
