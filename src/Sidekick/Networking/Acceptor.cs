using System.Net.Sockets;

namespace Sidekick.Networking;

/// <summary>
/// Takes the next client connection from a listening socket. When accept fails because the process is out of
/// descriptors or socket memory (<see cref="LocalShortage"/>), the connection stays in the kernel's queue and the
/// listening socket stays readable, so asking again at once spins a core for as long as the shortage lasts, and
/// serves nothing (Kestrel's own socket transport does that: it retries every failed accept at once). Here the next
/// attempt waits 5 ms, doubling up to 1 s, as Go's HTTP server (upstream's) does; the queued clients are served once
/// descriptors are free again. A client that reset while queued is skipped at once. Any other error waits too: one
/// that repeats must not spin either.
/// </summary>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Design", "CA1001", Justification = "A cancellation source without a timer holds nothing to dispose; it lives as long as its listener.")]
internal sealed class Acceptor(Func<CancellationToken, ValueTask<Socket>> accept, LocalShortage? shortage, TimeProvider time)
{
    public static readonly TimeSpan FirstWait = TimeSpan.FromMilliseconds(5);
    public static readonly TimeSpan LongestWait = TimeSpan.FromSeconds(1);

    /// <summary>Where a shortage is counted, by the accept here and by the listener setting up what was accepted.</summary>
    public LocalShortage? Shortage => shortage;

    // Cancelled when the listener is unbound, so that a wait between attempts does not hold Kestrel's shutdown.
    private readonly CancellationTokenSource _stopped = new();

    /// <summary>The next connection; null once the listener is unbound or <paramref name="cancellationToken"/> is cancelled.</summary>
    public async ValueTask<Socket?> AcceptAsync(CancellationToken cancellationToken)
    {
        var wait = TimeSpan.Zero;
        while (true)
        {
            try
            {
                return await accept(cancellationToken);
            }
            catch (Exception ex) when (ex is ObjectDisposedException or OperationCanceledException ||
                                       ex is SocketException { SocketErrorCode: SocketError.OperationAborted })
            {
                return null; // unbound
            }
            catch (SocketException ex) when (ex.SocketErrorCode is SocketError.ConnectionReset or SocketError.ConnectionAborted)
            {
                continue; // a client that reset before we accepted it
            }
            catch (SocketException ex)
            {
                if (LocalShortage.Is(ex.SocketErrorCode))
                {
                    shortage?.Record(ShortageSite.Accept, ex.SocketErrorCode);
                }

                wait = wait == TimeSpan.Zero ? FirstWait : TimeSpan.FromTicks(Math.Min(wait.Ticks * 2, LongestWait.Ticks));
            }

            using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _stopped.Token);
            try
            {
                await Task.Delay(wait, time, stop.Token);
            }
            catch (OperationCanceledException)
            {
                return null;
            }
        }
    }

    /// <summary>Ends a wait between attempts (the listener is being unbound). Not disposed: it holds no timer.</summary>
    public void Stop() => _stopped.Cancel();
}
