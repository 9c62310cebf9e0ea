using Microsoft.Win32.SafeHandles;
using Sidekick.Caching;
using Sidekick.Platform;

namespace Sidekick.Tests.Caching;

/// <summary>
/// Which failed spool writes turn O_DIRECT off for the process, told from the errors the kernel really gives (Linux:
/// the spool's O_DIRECT writer runs only there).
/// </summary>
public sealed class DirectSpoolWriterTests
{
    [Fact]
    public void A_full_disk_gives_up_one_fill_and_leaves_O_DIRECT_on()
    {
        using var full = File.OpenHandle("/dev/full", FileMode.Open, FileAccess.Write);

        var error = Assert.Throws<IOException>(() => RandomAccess.Write(full, new byte[4096], 0));

        Assert.False(DirectSpoolWriter.RefusesDirectIo(error), $"ENOSPC ({error.Message}) turned O_DIRECT off");
    }

    [Fact]
    public void A_file_system_refusing_an_O_DIRECT_write_turns_it_off()
    {
        // Beside the test binary (on the build's disk), not in a temporary directory that may be a tmpfs without O_DIRECT.
        var directory = Path.Combine(AppContext.BaseDirectory, "direct-refused-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(directory);
        try
        {
            var path = Path.Combine(directory, "spool");
            File.WriteAllBytes(path, new byte[8192]);
            var fd = Libc.open(path, Libc.O_WRONLY | Libc.O_DIRECT);
            Assert.True(fd >= 0, "the build directory's file system does not open files with O_DIRECT");
            using var direct = new SafeFileHandle(fd, ownsHandle: true);
            // 100 bytes at an unaligned address: EINVAL, as on a file system that takes no O_DIRECT writes.
            var error = Assert.Throws<IOException>(() => RandomAccess.Write(direct, new byte[100], 0));

            Assert.True(DirectSpoolWriter.RefusesDirectIo(error), $"EINVAL ({error.Message}) left O_DIRECT on");
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }
}
