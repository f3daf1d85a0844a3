using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.IO;

/// <summary>
/// Every libc call of the engine, the ones .NET does not expose: flock, OFD byte-range locks, fsync, sync_file_range, chown, statx,
/// statvfs, statfs, realpath, renameat2, access, lseek's SEEK_DATA/SEEK_HOLE, fallocate and posix_fallocate.
/// (libvirt's own entry points live in <c>Libvirt/LibvirtNative.cs</c>, its binding layer.)
/// </summary>
internal static unsafe partial class NativeMethods
{
    private const string LibC = "libc";

    internal const int LOCK_SH = 1;
    internal const int LOCK_EX = 2;
    internal const int LOCK_NB = 4;
    internal const int LOCK_UN = 8;
    internal const int EWOULDBLOCK = 11;
    internal const int EINTR = 4;
    internal const int AT_FDCWD = -100;
    internal const int AT_SYMLINK_NOFOLLOW = 0x100;
    internal const int AT_EMPTY_PATH = 0x1000;
    internal const uint STATX_BASIC_STATS = 0x7ff;

    [LibraryImport(LibC, SetLastError = true)]
    internal static partial int flock(int fd, int operation);

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

    internal const int O_RDWR = 2;
    internal const int O_CREAT = 0x40;
    internal const int O_EXCL = 0x80;
    internal const int O_CLOEXEC = 0x80000;
    internal const int O_NOFOLLOW = 0x20000;

    [LibraryImport(LibC, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int open(string path, int flags);

    [LibraryImport(LibC, EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int open(string path, int flags, int mode);

    [LibraryImport(LibC, SetLastError = true)]
    internal static partial int fsync(int fd);

    [LibraryImport(LibC, SetLastError = true)]
    internal static partial int close(int fd);

    internal const uint SYNC_FILE_RANGE_WAIT_BEFORE = 1;
    internal const uint SYNC_FILE_RANGE_WRITE = 2;
    internal const uint SYNC_FILE_RANGE_WAIT_AFTER = 4;

    /// <summary>sync_file_range(2): starts (and optionally waits for) write-out of a file range; no metadata, no cache flush.</summary>
    [LibraryImport(LibC, SetLastError = true)]
    internal static partial int sync_file_range(SafeFileHandle fd, long offset, long nbytes, uint flags);

    [LibraryImport(LibC, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int chown(string path, int owner, int group);

    [LibraryImport(LibC, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int statx(int dirfd, string path, int flags, uint mask, byte* buffer);

    [LibraryImport(LibC, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int statvfs(string path, StatVfs* buffer);

    /// <summary>statfs(2) into a raw buffer of at least 120 bytes (struct statfs on 64-bit Linux), for f_type and f_bsize.</summary>
    [LibraryImport(LibC, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int statfs(string path, byte* buffer);

    [LibraryImport(LibC)]
    internal static partial uint geteuid();

    [LibraryImport(LibC, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial nint realpath(string path, nint resolved);

    [LibraryImport(LibC)]
    internal static partial void free(nint pointer);

    internal const uint RENAME_NOREPLACE = 1;
    internal const int EEXIST = 17;

    [LibraryImport(LibC, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int renameat2(int olddirfd, string oldpath, int newdirfd, string newpath, uint flags);

    internal const int W_OK = 2;

    /// <summary>access(2): 0 when the calling process may access <paramref name="path"/> as <paramref name="mode"/> asks.</summary>
    [LibraryImport(LibC, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int access(string path, int mode);

    internal const int SEEK_DATA = 3;
    internal const int SEEK_HOLE = 4;
    internal const int ENXIO = 6;

    [LibraryImport(LibC, SetLastError = true)]
    internal static partial long lseek(int fd, long offset, int whence);

    internal const int FALLOC_FL_KEEP_SIZE = 1;
    internal const int FALLOC_FL_PUNCH_HOLE = 2;

    [LibraryImport(LibC, SetLastError = true)]
    internal static partial int fallocate(SafeFileHandle fd, int mode, long offset, long length);

    /// <summary>Returns 0 or an errno value (it does not set errno).</summary>
    [LibraryImport(LibC)]
    internal static partial int posix_fallocate(int fd, long offset, long length);

    internal const int POSIX_FADV_RANDOM = 1;

    /// <summary>posix_fadvise(2); returns 0 or an errno value (it does not set errno).</summary>
    [LibraryImport(LibC)]
    internal static partial int posix_fadvise(SafeFileHandle fd, long offset, long length, int advice);

    /// <summary>glibc's struct statvfs on 64-bit Linux: every field is 8 bytes, then 6 spare ints.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct StatVfs
    {
        public ulong Bsize;
        public ulong Frsize;
        public ulong Blocks;
        public ulong Bfree;
        public ulong Bavail;
        public ulong Files;
        public ulong Ffree;
        public ulong Favail;
        public ulong Fsid;
        public ulong Flag;
        public ulong Namemax;
        public fixed int Spare[6];
    }
}
