namespace Sidekick;

internal static class Program
{
    public static int Main(string[] args) => args.Length;
}
