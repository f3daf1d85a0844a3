using System.Diagnostics;
using System.Runtime.InteropServices;
using KvmStorage.Core.Errors;

namespace KvmStorage.Core.IO;

/// <summary>
/// An exclusive advisory lock (<c>flock(2)</c>) on a lock file. It serialises writers across processes and
/// dies with its process, so a killed script never leaves a lock that blocks the next run.
/// </summary>
public sealed class FileLock : IDisposable
{
    private readonly FileStream stream;

    private FileLock(FileStream stream) => this.stream = stream;

    /// <summary>The default time to wait for another writer.</summary>
    public static TimeSpan DefaultTimeout { get; set; } = TimeSpan.FromSeconds(60);

    public static FileLock Acquire(string lockPath, TimeSpan? timeout = null, CancellationToken cancellationToken = default)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(lockPath)!);
        var options = new FileStreamOptions
        {
            Mode = FileMode.OpenOrCreate,
            Access = FileAccess.ReadWrite,
            // FileShare.ReadWrite keeps .NET from taking its own flock, which would conflict with ours.
            Share = FileShare.ReadWrite | FileShare.Delete,
            UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite,
        };
        var stream = new FileStream(lockPath, options);
        try
        {
            int fd = (int)stream.SafeFileHandle.DangerousGetHandle();
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

            return new FileLock(stream);
        }
        catch
        {
            stream.Dispose();
            throw;
        }
    }

    public void Dispose() => stream.Dispose();
}
