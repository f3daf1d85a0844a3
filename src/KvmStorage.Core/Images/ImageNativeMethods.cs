using System.Runtime.InteropServices;

namespace KvmStorage.Core.Images;

/// <summary>libc calls of the image engine: OFD byte-range locks (fcntl) and posix_fallocate.</summary>
internal static unsafe partial class ImageNativeMethods
{
    private const string LibC = "libc";

    internal const int F_OFD_GETLK = 36;
    internal const int F_OFD_SETLK = 37;
    internal const short F_RDLCK = 0;
    internal const short F_WRLCK = 1;
    internal const short F_UNLCK = 2;
    internal const short SEEK_SET = 0;

    /// <summary>struct flock on 64-bit Linux (x86-64 and arm64 share this layout).</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct Flock
    {
        public short Type;
        public short Whence;
        public long Start;
        public long Len;
        public int Pid;
    }

    [LibraryImport(LibC, EntryPoint = "fcntl", SetLastError = true)]
    internal static partial int FcntlLock(int fd, int command, Flock* lockInfo);

    /// <summary>Returns 0 or an errno value (it does not set errno).</summary>
    [LibraryImport(LibC, EntryPoint = "posix_fallocate")]
    internal static partial int PosixFallocate(int fd, long offset, long length);
}
