using System.Text;
using System.Threading.Channels;

namespace Sidekick.Observability;

/// <summary>
/// Lines and trace records for stdout, formatted and written by one background task so the request path
/// neither formats nor waits on the console. When the console cannot keep up, new entries are dropped and
/// counted instead of blocking requests.
/// </summary>
internal sealed class OutputQueue : IAsyncDisposable
{
    // Holds a ready line (string) or a TraceRecord still to be formatted.
    private readonly Channel<object> _lines = Channel.CreateBounded<object>(new BoundedChannelOptions(16 * 1024)
    {
        // With Wait, TryWrite fails when full and the caller counts the drop; the Drop* modes would report
        // success for an entry they silently discard. Nothing ever awaits WriteAsync, so nothing waits.
        FullMode = BoundedChannelFullMode.Wait,
        SingleReader = true,
    });

    private readonly TextWriter _output;
    private readonly TraceFormatter _formatter;
    private readonly Task _writer;
    private long _dropped;

    public OutputQueue(TextWriter output, TraceFormatter formatter)
    {
        _output = output;
        _formatter = formatter;
        _writer = Task.Run(WriteAsync);
    }

    /// <summary>Entries dropped because the console was too slow or could not be written to.</summary>
    public long Dropped => Volatile.Read(ref _dropped);

    public void Enqueue(string line) => Add(line);

    /// <summary>Queues a record; it is formatted on the writer task, off the request path.</summary>
    public void Enqueue(TraceRecord record) => Add(record);

    private void Add(object entry)
    {
        if (!_lines.Writer.TryWrite(entry))
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
        // Entries are gathered into one write per batch (up to 64 KiB): the console is often an unbuffered,
        // auto-flushing writer, and one system call per trace line would cost more than the formatting.
        var reader = _lines.Reader;
        var batch = new StringBuilder();
        while (await reader.WaitToReadAsync())
        {
            var entries = 0;
            while (batch.Length < 64 * 1024 && reader.TryRead(out var entry))
            {
                batch.Append(entry as string ?? _formatter.Format((TraceRecord)entry)).Append('\n');
                entries++;
            }

            try
            {
                await _output.WriteAsync(batch);
                await _output.FlushAsync();
            }
            catch (IOException)
            {
                // stdout went away (a closed pipe, a full disk): keep proxying, count what could not be written.
                Interlocked.Add(ref _dropped, entries);
            }

            batch.Clear();
        }
    }
}
