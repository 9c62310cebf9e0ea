using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace Sidekick.Platform;

/// <summary>
/// Every native call sidekick makes, declared one way (source-generated <c>LibraryImport</c>): the system
/// calls the event loops use (x86-64 and arm64 layouts), the C library's heap and memory-advice calls
/// (<see cref="NativeHeap"/>, <see cref="CodePages"/>), and signal dispositions (<see cref="InheritedSignals"/>).
/// </summary>
internal static unsafe partial class Libc
{
    public const uint EPOLLIN = 0x001;
    public const uint EPOLLOUT = 0x004;
    public const uint EPOLLERR = 0x008;
    public const uint EPOLLHUP = 0x010;
    public const uint EPOLLRDHUP = 0x2000;
    public const uint EPOLLET = 1u << 31;
    public const int EPOLL_CTL_ADD = 1;
    public const int EPOLL_CLOEXEC = 0x80000;
    public const int MSG_NOSIGNAL = 0x4000;
    public const int EINTR = 4;
    public const int EAGAIN = 11;
    public const int EINVAL = 22;

    /// <summary>struct epoll_event is packed on x86-64 (12 bytes) and naturally aligned elsewhere (16).</summary>
    public static readonly int EpollEventSize = RuntimeInformation.ProcessArchitecture == Architecture.X64 ? 12 : 16;

    public static readonly int EpollDataOffset = RuntimeInformation.ProcessArchitecture == Architecture.X64 ? 4 : 8;

    [StructLayout(LayoutKind.Sequential)]
    public struct IoVector
    {
        public byte* Base;
        public nuint Length;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct MessageHeader
    {
        public void* Name;
        public uint NameLength;
        public IoVector* Vectors;
        public nuint VectorCount;
        public void* Control;
        public nuint ControlLength;
        public int Flags;
    }

    /// <summary>Ends the process at once: no exit handlers, no waiting for the host (a second stop signal).</summary>
    [LibraryImport("libc", EntryPoint = "_exit")]
    public static partial void _exit(int status);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int epoll_create1(int flags);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int epoll_ctl(int epfd, int op, int fd, byte* eventData);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int epoll_wait(int epfd, byte* events, int maxEvents, int timeout);

    // recv, send and sendmsg go through syscall(2) rather than their libc wrappers: those are pthread
    // cancellation points, and switching cancellation on and off around every call was ~1.5 % of the event
    // loop's user time (nothing here uses pthread_cancel). The sockets are non-blocking, so each call is short
    // and the runtime need not mark the thread as outside managed code (SuppressGCTransition).
    private static readonly nint SysRecvFrom = RuntimeInformation.ProcessArchitecture == Architecture.X64 ? 45 : 207;
    private static readonly nint SysSendTo = RuntimeInformation.ProcessArchitecture == Architecture.X64 ? 44 : 206;
    private static readonly nint SysSendMsg = RuntimeInformation.ProcessArchitecture == Architecture.X64 ? 46 : 211;

    public static nint recv(SafeSocketHandle socket, byte* buffer, nint length, int flags) =>
        syscall(SysRecvFrom, socket, (nint)buffer, length, flags, 0, 0);

    public static nint send(SafeSocketHandle socket, byte* buffer, nint length, int flags) =>
        syscall(SysSendTo, socket, (nint)buffer, length, flags, 0, 0);

    public static nint sendmsg(SafeSocketHandle socket, MessageHeader* message, int flags) =>
        syscall(SysSendMsg, socket, (nint)message, flags, 0, 0, 0);

    // Every argument is an integer register, so the variadic syscall(2) is called like any other function.
    [LibraryImport("libc", SetLastError = true)]
    [SuppressGCTransition]
    private static partial nint syscall(nint number, SafeSocketHandle socket, nint a2, nint a3, nint a4, nint a5, nint a6);

    /// <summary>ioctl request for the bytes a socket's kernel send queue still holds (TIOCOUTQ, alias SIOCOUTQ).</summary>
    public const nuint SIOCOUTQ = 0x5411;

    [LibraryImport("libc", SetLastError = true)]
    private static partial int ioctl(SafeSocketHandle socket, nuint request, int* value);

    /// <summary>Bytes a socket's kernel send queue holds (sent to no peer yet, or not acknowledged), -1 when it cannot be read.</summary>
    public static int SendQueued(SafeSocketHandle socket)
    {
        int queued;
        return ioctl(socket, SIOCOUTQ, &queued) == 0 ? queued : -1;
    }

    public const int O_WRONLY = 1;
    public const int O_CLOEXEC = 0x80000;

    /// <summary>O_DIRECT: 040000 on x86-64, 0200000 on arm64.</summary>
    public static readonly int O_DIRECT = RuntimeInformation.ProcessArchitecture == Architecture.X64 ? 0x4000 : 0x10000;

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int open(string path, int flags);

    [LibraryImport("libc")]
    public static partial int mallopt(int option, int value);

    [LibraryImport("libc")]
    public static partial int malloc_trim(nuint pad);

    [LibraryImport("libc")]
    public static partial int madvise(nint address, nuint length, int advice);

    /// <summary>madvise(2): back the range with transparent huge pages where the kernel allows them.</summary>
    public const int MADV_HUGEPAGE = 14;

    /// <summary>posix_fadvise(2): the range's clean pages may leave the page cache now.</summary>
    public const int POSIX_FADV_DONTNEED = 4;

    /// <summary>Returns 0, or the error number (it does not set errno).</summary>
    [LibraryImport("libc")]
    public static partial int posix_fadvise(SafeHandle file, long offset, long length, int advice);

    public const int SIGHUP = 1;
    public const int SIGINT = 2;
    public const nint SIG_DFL = 0;
    public const nint SIG_IGN = 1;

    /// <summary>
    /// sigaction(2). The caller passes room for the C library's struct sigaction, of which only the first field,
    /// the handler, is read: it comes first in glibc's, musl's and Darwin's layouts alike.
    /// </summary>
    [LibraryImport("libc", SetLastError = true)]
    public static partial int sigaction(int signal, void* action, void* previous);

    [LibraryImport("libc", SetLastError = true)]
    public static partial nint signal(int signal, nint handler);

    /// <summary>The <see cref="SocketError"/> .NET reports for a Linux errno, for the errors a stream socket meets.</summary>
    public static SocketError ToSocketError(int errno) => errno switch
    {
        9 => SocketError.OperationAborted, // EBADF: closed under us
        12 or 105 => SocketError.NoBufferSpaceAvailable, // ENOMEM, ENOBUFS: as .NET reports them
        23 or 24 => SocketError.TooManyOpenSockets, // ENFILE, EMFILE
        32 => SocketError.Shutdown, // EPIPE
        101 => SocketError.NetworkUnreachable,
        103 => SocketError.ConnectionAborted,
        104 => SocketError.ConnectionReset,
        107 => SocketError.NotConnected,
        110 => SocketError.TimedOut,
        111 => SocketError.ConnectionRefused,
        113 => SocketError.HostUnreachable,
        _ => SocketError.SocketError,
    };
}
