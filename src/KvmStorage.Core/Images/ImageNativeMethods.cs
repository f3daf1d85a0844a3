using System.Runtime.InteropServices;

namespace KvmStorage.Core.Images;

/// <summary>libc calls of the image engine: posix_fallocate.</summary>
internal static partial class ImageNativeMethods
{
    private const string LibC = "libc";

    /// <summary>Returns 0 or an errno value (it does not set errno).</summary>
    [LibraryImport(LibC, EntryPoint = "posix_fallocate")]
    internal static partial int PosixFallocate(int fd, long offset, long length);
}
