using System.Runtime.InteropServices;

namespace KvmStorage.Core.IO;

/// <summary>
/// One-byte open-file-description locks (<c>fcntl(F_OFD_*)</c>): held by an open file, not a process, dropped when
/// the last descriptor of that open file closes, and independent of <c>flock(2)</c>, which .NET's FileStream takes
/// on every file it opens. QEMU's image locks are of this kind.
/// </summary>
internal static class OfdLock
{
    /// <summary>True when another open file description holds a lock on <paramref name="offset"/>.</summary>
    /// <exception cref="IOException">fcntl failed.</exception>
    public static unsafe bool IsLockedByOther(int fd, long offset)
    {
        // An exclusive probe reports any lock of another open file description on the byte.
        var probe = new NativeMethods.Flock { Type = NativeMethods.F_WRLCK, Whence = NativeMethods.SEEK_SET, Start = offset, Len = 1 };
        if (NativeMethods.FcntlLock(fd, NativeMethods.F_OFD_GETLK, &probe) != 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            throw new IOException($"fcntl(F_OFD_GETLK) failed: {Marshal.GetPInvokeErrorMessage(errno)}", errno);
        }

        return probe.Type != NativeMethods.F_UNLCK;
    }

    /// <summary>Takes a shared (<paramref name="exclusive"/> false) or exclusive lock on one byte without waiting.</summary>
    public static unsafe bool TryLock(int fd, long offset, bool exclusive)
    {
        var request = new NativeMethods.Flock { Type = exclusive ? NativeMethods.F_WRLCK : NativeMethods.F_RDLCK, Whence = NativeMethods.SEEK_SET, Start = offset, Len = 1 };
        return NativeMethods.FcntlLock(fd, NativeMethods.F_OFD_SETLK, &request) == 0;
    }
}
