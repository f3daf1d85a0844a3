using System.Buffers.Binary;
using System.Runtime.InteropServices;

namespace KvmStorage.Core.IO;

/// <summary>What <c>statx(2)</c> says of a file: the parts .NET does not expose (allocated blocks, owner).</summary>
public readonly record struct FileStatus(ulong Length, ulong AllocatedBytes, uint Mode, uint Uid, uint Gid)
{
    /// <summary>Reads the status of <paramref name="path"/>, following symlinks unless told otherwise.</summary>
    public static unsafe FileStatus Get(string path, bool followSymlinks = true)
    {
        // struct statx has one layout on every Linux architecture, unlike struct stat.
        byte* buffer = stackalloc byte[256];
        int flags = followSymlinks ? 0 : NativeMethods.AT_SYMLINK_NOFOLLOW;
        if (NativeMethods.statx(NativeMethods.AT_FDCWD, path, flags, NativeMethods.STATX_BASIC_STATS, buffer) != 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            throw new IOException($"statx failed for '{path}': {Marshal.GetPInvokeErrorMessage(errno)}", errno);
        }

        var span = new ReadOnlySpan<byte>(buffer, 256);
        uint uid = BinaryPrimitives.ReadUInt32LittleEndian(span[20..]);
        uint gid = BinaryPrimitives.ReadUInt32LittleEndian(span[24..]);
        ushort mode = BinaryPrimitives.ReadUInt16LittleEndian(span[28..]);
        ulong size = BinaryPrimitives.ReadUInt64LittleEndian(span[40..]);
        ulong blocks = BinaryPrimitives.ReadUInt64LittleEndian(span[48..]);
        return new FileStatus(size, blocks * 512, mode, uid, gid);
    }
}

/// <summary>Capacity and free space of the file system holding a path (<c>statvfs(3)</c>), as libvirt reports for dir pools.</summary>
public readonly record struct FileSystemSpace(ulong Capacity, ulong Allocation, ulong Available)
{
    public static unsafe FileSystemSpace Get(string path)
    {
        NativeMethods.StatVfs st;
        if (NativeMethods.statvfs(path, &st) != 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            throw new IOException($"statvfs failed for '{path}': {Marshal.GetPInvokeErrorMessage(errno)}", errno);
        }

        return new FileSystemSpace(st.Frsize * st.Blocks, st.Frsize * (st.Blocks - st.Bfree), st.Frsize * st.Bavail);
    }
}
