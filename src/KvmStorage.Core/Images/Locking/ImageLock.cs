using System.Runtime.InteropServices;
using KvmStorage.Core.Errors;
using KvmStorage.Core.IO;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images;

/// <summary>
/// QEMU-compatible image locks. QEMU (block/file-posix.c, <c>raw_apply_lock_bytes</c>) takes shared OFD
/// byte-range locks: byte <c>100 + bit</c> for each permission it holds and byte <c>200 + bit</c> for each
/// permission it refuses to share. Another user conflicts when it needs a permission whose 200-byte is
/// locked, or refuses to share one whose 100-byte is locked.
/// </summary>
public static class ImageLock
{
    private const long PermBase = 100;
    private const long SharedBase = 200;

    // BLK_PERM_* bits of QEMU.
    private const int ConsistentRead = 0;
    private const int Write = 1;
    private const int WriteUnchanged = 2;
    private const int Resize = 3;
    private const int PermCount = 4;

    /// <summary>
    /// Throws <c>ImageInUse</c> (ResourceBusy) when another process holds the image in a way that
    /// conflicts with reading (a writer that refuses shared readers, like <c>qemu-img info</c> without
    /// <c>-U</c>) or with writing (any writer or a reader that refuses writers).
    /// </summary>
    public static void EnsureNotInUse(string path, bool forWrite)
    {
        using SafeFileHandle handle = OpenForLock(path, forWrite: false);
        CheckConflicts(handle, path, forWrite);
    }

    /// <summary>
    /// Takes QEMU's locks of a writer (consistent read, write, resize; sharing only read and unchanged
    /// writes) until disposed, after checking that nobody conflicts. A second writer, ours or QEMU's, is refused.
    /// </summary>
    public static IDisposable AcquireForWrite(string path)
    {
        SafeFileHandle handle = OpenForLock(path, forWrite: true);
        try
        {
            // Lock first, then test: two racing writers each see the other's lock and one of them fails.
            int fd = Fd(handle);
            foreach (long offset in new[] { PermBase + ConsistentRead, PermBase + Write, PermBase + Resize, SharedBase + Write, SharedBase + Resize })
            {
                if (!OfdLock.TryLock(fd, offset, exclusive: false))
                {
                    throw InUse(path, "another process holds a conflicting lock");
                }
            }

            CheckConflicts(handle, path, forWrite: true);
            return new Holder(handle);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Takes the write lock, retrying briefly: a process this one spawns inherits our descriptors between fork and
    /// exec, so the OFD lock of our own previous edit can outlive its handle by a moment and look like another holder.
    /// </summary>
    internal static IDisposable AcquireForWriteAfterOwnChildren(string path)
    {
        for (int attempt = 1; ; attempt++)
        {
            try
            {
                return AcquireForWrite(path);
            }
            catch (KvmStorageException e) when (e.ErrorId == ImageErrorIds.ImageInUse && attempt < 8)
            {
                Thread.Sleep(25 * attempt);
            }
        }
    }

    private static SafeFileHandle OpenForLock(string path, bool forWrite)
    {
        try
        {
            return File.OpenHandle(path, FileMode.Open, forWrite ? FileAccess.ReadWrite : FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw ImageErrors.FromIo(path, e);
        }
    }

    private static void CheckConflicts(SafeFileHandle handle, string path, bool forWrite)
    {
        int fd = Fd(handle);

        // Permissions we need, which no other holder may refuse to share.
        int[] needed = forWrite ? [ConsistentRead, Write, Resize] : [ConsistentRead];
        foreach (int bit in needed)
        {
            if (IsLockedByOther(fd, SharedBase + bit))
            {
                throw InUse(path, $"another process does not share the \"{Name(bit)}\" permission");
            }
        }

        // Permissions we refuse to share, which no other holder may have.
        int[] unshared = [Write, Resize];
        foreach (int bit in unshared)
        {
            if (IsLockedByOther(fd, PermBase + bit))
            {
                throw InUse(path, $"another process holds the \"{Name(bit)}\" permission");
            }
        }
    }

    private static string Name(int bit) => bit switch
    {
        ConsistentRead => "consistent read",
        Write => "write",
        WriteUnchanged => "write unchanged",
        Resize => "resize",
        _ => "unknown",
    };

    private static KvmStorageException InUse(string path, string reason) =>
        new(ErrorKind.ResourceBusy, ImageErrorIds.ImageInUse, $"The image '{path}' is in use: {reason} (is a virtual machine running on it?).", path);

    private static int Fd(SafeFileHandle handle) => (int)handle.DangerousGetHandle();

    private static bool IsLockedByOther(int fd, long offset)
    {
        try
        {
            return OfdLock.IsLockedByOther(fd, offset);
        }
        catch (IOException e)
        {
            throw new KvmStorageException(ErrorKind.ResourceUnavailable, ImageErrorIds.ImageUnreadable, e.Message, null, e);
        }
    }

    /// <summary>Closing the descriptor drops its OFD locks.</summary>
    private sealed class Holder(SafeFileHandle handle) : IDisposable
    {
        public void Dispose() => handle.Dispose();
    }
}
