using System.IO.Pipelines;

namespace Sidekick.Networking;

/// <summary>
/// When the send loop of a client connection runs once its output pipe is flushed: at once on the connection's
/// event-loop thread (which batches its sends itself, <see cref="EventLoop.TryDeferSend"/>), and once gathering is
/// on, from any other thread only after the work item that flushed is done. An HTTP/2 connection's frames are
/// written and flushed from the thread pool by Kestrel's frame writer, one flush (one TLS record) per stream's
/// write; sent at once, that is one send per response (h2load, 32 connections x 8 streams: 2.0 sends per request
/// against HAProxy's 1.2, each waking the client). Queued behind the flushing work item, the send loop finds every
/// record the frame writer flushed in that pass and sends them with one system call.
/// </summary>
internal sealed class GatheredSends(EventLoop loop) : PipeScheduler
{
    private volatile bool _gathering;

    /// <summary>From now on, flushes made off the loop thread are sent once the flushing work item is done.</summary>
    public void Start() => _gathering = true;

    public bool Gathering => _gathering;

    public override void Schedule(Action<object?> action, object? state)
    {
        if (!_gathering || EventLoop.Current == loop)
        {
            action(state);
            return;
        }

        // The flushing thread's own queue: taken by that thread as soon as its work item returns (or by an idle
        // worker sooner), never behind the whole pool's backlog.
        System.Threading.ThreadPool.UnsafeQueueUserWorkItem(action, state, preferLocal: true);
    }
}
