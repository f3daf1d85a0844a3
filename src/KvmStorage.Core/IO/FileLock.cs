using System.Diagnostics;
using System.Runtime.InteropServices;
using KvmStorage.Core.Errors;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.IO;

/// <summary>
/// An exclusive advisory lock (<c>flock(2)</c>) on a lock file. It serialises writers across processes and
/// dies with its process, so a killed script never leaves a lock that blocks the next run.
/// </summary>
public sealed class FileLock : IDisposable
{
    private readonly SafeFileHandle handle;

    private FileLock(SafeFileHandle handle) => this.handle = handle;

    /// <summary>The default time to wait for another writer.</summary>
    public static TimeSpan DefaultTimeout { get; set; } = TimeSpan.FromSeconds(60);

    public static FileLock Acquire(string lockPath, TimeSpan? timeout = null, CancellationToken cancellationToken = default)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(lockPath)!);

        // open(2), not FileStream: on local file systems .NET takes its own flock(LOCK_SH) on any FileStream opened
        // with FileShare other than None, and that fails with a sharing violation while another holder has LOCK_EX.
        int fd = NativeMethods.openWithMode(lockPath, NativeMethods.O_RDWR | NativeMethods.O_CREAT | NativeMethods.O_CLOEXEC, 0b110_000_000);
        if (fd < 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            string reason = $"Cannot open the lock file '{lockPath}': {Marshal.GetPInvokeErrorMessage(errno)}";
            throw errno == 13 /* EACCES */ ? new UnauthorizedAccessException(reason) : new IOException(reason, errno);
        }

        var handle = new SafeFileHandle(fd, ownsHandle: true);
        try
        {
            var wait = Stopwatch.StartNew();
            TimeSpan limit = timeout ?? DefaultTimeout;
            int delay = 5;
            while (NativeMethods.flock(fd, NativeMethods.LOCK_EX | NativeMethods.LOCK_NB) != 0)
            {
                int errno = Marshal.GetLastPInvokeError();
                if (errno != NativeMethods.EWOULDBLOCK && errno != NativeMethods.EINTR)
                {
                    throw new IOException($"Cannot lock '{lockPath}': {Marshal.GetPInvokeErrorMessage(errno)}", errno);
                }

                if (wait.Elapsed > limit)
                {
                    throw new KvmStorageException(
                        ErrorKind.ResourceBusy,
                        ErrorIds.LockTimeout,
                        $"Another process has held the lock '{lockPath}' for more than {limit.TotalSeconds:0} seconds.",
                        lockPath);
                }

                cancellationToken.ThrowIfCancellationRequested();
                Thread.Sleep(delay);
                delay = Math.Min(delay * 2, 100);
            }

            return new FileLock(handle);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>Closing the descriptor releases the flock.</summary>
    public void Dispose() => handle.Dispose();
}
