using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.IO;

/// <summary>
/// Overlaps a file's write-out with the work that produces it: every <see cref="KickBytes"/> written, the kernel is
/// asked to start writing the dirty pages (sync_file_range, SYNC_FILE_RANGE_WRITE), so the one fsync at the end only
/// waits for the tail instead of the whole file. Durability still comes from that fsync alone; this only moves the
/// device's work earlier. Where the call is refused (a file system without it), the writer carries on without it.
/// </summary>
public sealed class WriteBehind
{
    /// <summary>Bytes written between two requests for write-out.</summary>
    public const long KickBytes = 16L * 1024 * 1024;

    private readonly SafeFileHandle handle;
    private long pending;
    private bool unsupported;

    public WriteBehind(SafeFileHandle handle)
    {
        ArgumentNullException.ThrowIfNull(handle);
        this.handle = handle;
    }

    /// <summary>Counts <paramref name="bytes"/> written; past the threshold, starts write-out of every dirty page of the file.</summary>
    public void Written(long bytes)
    {
        pending += bytes;
        if (pending >= KickBytes)
        {
            Kick();
        }
    }

    /// <summary>Starts write-out of every dirty page of the file now (non-blocking in the common case).</summary>
    public void Kick()
    {
        pending = 0;
        if (unsupported)
        {
            return;
        }

        // offset 0, nbytes 0: through the end of the file. Pages already under write-out are left alone.
        if (NativeMethods.sync_file_range(handle, 0, 0, NativeMethods.SYNC_FILE_RANGE_WRITE) != 0)
        {
            unsupported = true;
        }
    }
}
