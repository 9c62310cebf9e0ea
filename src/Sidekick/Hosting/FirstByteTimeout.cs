using Microsoft.AspNetCore.Connections;

namespace Sidekick.Hosting;

/// <summary>
/// Closes a client connection that sends nothing within the header timeout. Kestrel holds a new connection
/// to its keep-alive timeout until the first byte (2m10s here) and starts the header timeout only then, so
/// a connection that never speaks held a descriptor for minutes. Runs once per connection, before TLS.
/// </summary>
internal static class FirstByteTimeout
{
    public static Func<ConnectionDelegate, ConnectionDelegate> Create(TimeSpan timeout, TimeProvider time) => next => async connection =>
    {
        var input = connection.Transport.Input;
        using (var silent = new CancellationTokenSource(timeout, time))
        {
            try
            {
                var result = await input.ReadAsync(silent.Token);
                // Nothing consumed, nothing examined: Kestrel reads the same bytes next.
                input.AdvanceTo(result.Buffer.Start);
            }
            catch (OperationCanceledException) when (silent.IsCancellationRequested)
            {
                connection.Abort(new ConnectionAbortedException("the client sent nothing within the header timeout"));
                return;
            }
        }

        await next(connection);
    };
}
