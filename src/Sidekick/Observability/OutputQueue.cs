using System.Threading.Channels;

namespace Sidekick.Observability;

/// <summary>
/// Lines for stdout, written by one background task so the request path never waits on the console. When
/// the console cannot keep up, new lines are dropped and counted instead of blocking requests.
/// </summary>
internal sealed class OutputQueue : IAsyncDisposable
{
    private readonly Channel<string> _lines = Channel.CreateBounded<string>(new BoundedChannelOptions(16 * 1024)
    {
        FullMode = BoundedChannelFullMode.DropWrite,
        SingleReader = true,
    });

    private readonly TextWriter _output;
    private readonly Task _writer;
    private long _dropped;

    public OutputQueue(TextWriter output)
    {
        _output = output;
        _writer = Task.Run(WriteAsync);
    }

    /// <summary>Lines dropped because the console was too slow.</summary>
    public long Dropped => Volatile.Read(ref _dropped);

    public void Enqueue(string line)
    {
        if (!_lines.Writer.TryWrite(line))
        {
            Interlocked.Increment(ref _dropped);
        }
    }

    public async ValueTask DisposeAsync()
    {
        _lines.Writer.TryComplete();
        await _writer;
    }

    private async Task WriteAsync()
    {
        var reader = _lines.Reader;
        while (await reader.WaitToReadAsync())
        {
            while (reader.TryRead(out var line))
            {
                await _output.WriteLineAsync(line);
            }

            await _output.FlushAsync();
        }
    }
}
