using System.Buffers.Binary;
using System.Runtime.InteropServices;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Sizes;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.IO;

/// <summary>
/// What the file system holding a folder allows: its type and the largest file it can hold, when known
/// (<c>statfs(2)</c>). Files beyond it are refused as <c>FileTooLarge</c>, before anything is written.
/// </summary>
public sealed record FileSystemLimits(string? Type, ulong? MaxFileSize)
{
    private const long ExtMagic = 0xEF53;
    private const int Efbig = 27;

    /// <summary>The limits of the file system that holds <paramref name="directory"/>.</summary>
    /// <exception cref="IOException">statfs failed (the folder does not exist, for one).</exception>
    public static unsafe FileSystemLimits Get(string directory)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        byte* buffer = stackalloc byte[256];
        if (NativeMethods.statfs(directory, buffer) != 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            throw new IOException($"statfs failed for '{directory}': {Marshal.GetPInvokeErrorMessage(errno)}", errno);
        }

        var span = new ReadOnlySpan<byte>(buffer, 256);
        long magic = BinaryPrimitives.ReadInt64LittleEndian(span);
        ulong blockSize = BinaryPrimitives.ReadUInt64LittleEndian(span[8..]);
        string? type = MountedType(directory) ?? magic switch
        {
            ExtMagic => "ext2/ext3/ext4",
            0x58465342 => "xfs",
            0x9123683E => "btrfs",
            0x01021994 => "tmpfs",
            _ => null,
        };

        // ext4 addresses a file's blocks with 32-bit logical numbers (ext4_max_size: (2^32 - 1) blocks), 16 TiB
        // with 4 KiB blocks; ext2 and ext3 hold less, so this bounds them too. Elsewhere the write reports EFBIG.
        ulong? maxFile = magic == ExtMagic && blockSize is > 0 and <= 65536 ? (uint.MaxValue * blockSize) : null;
        return new FileSystemLimits(type, maxFile);
    }

    /// <summary>Refuses, before anything is written, a file of <paramref name="length"/> bytes at <paramref name="path"/> that its file system cannot hold.</summary>
    /// <exception cref="KvmStorageException">FileTooLarge.</exception>
    public static void RequireFits(string path, ulong length)
    {
        string full = Path.GetFullPath(path);
        FileSystemLimits limits;
        try
        {
            limits = Get(Path.GetDirectoryName(full)!);
        }
        catch (IOException)
        {
            // A missing folder is reported by whoever creates the file; an unknown limit by the write's EFBIG.
            return;
        }

        if (limits.MaxFileSize is ulong max && length > max)
        {
            throw limits.Refusal(full, length, null);
        }
    }

    /// <summary>
    /// <see cref="RandomAccess.SetLength"/>, but a length the file system cannot hold (EFBIG, which .NET reports as an
    /// ArgumentOutOfRangeException) is a <c>FileTooLarge</c> refusal naming the limit.
    /// </summary>
    public static void SetLength(SafeFileHandle handle, ulong length, string path)
    {
        ArgumentNullException.ThrowIfNull(handle);
        try
        {
            RandomAccess.SetLength(handle, checked((long)length));
        }
        catch (ArgumentOutOfRangeException e)
        {
            throw TooLarge(path, length, e);
        }
    }

    /// <summary>Whether <paramref name="e"/> is a write the file system refused with EFBIG (the file would be too large).</summary>
    public static bool IsTooLarge(Exception e) => e is IOException { HResult: Efbig };

    /// <summary>The <c>FileTooLarge</c> refusal of a file at <paramref name="path"/> of <paramref name="length"/> bytes.</summary>
    public static KvmStorageException TooLarge(string path, ulong length, Exception? inner)
    {
        FileSystemLimits? limits;
        try
        {
            limits = Get(Path.GetDirectoryName(Path.GetFullPath(path))!);
        }
        catch (IOException)
        {
            limits = null;
        }

        return limits is null
            ? new KvmStorageException(ErrorKind.InvalidArgument, ErrorIds.FileTooLarge, $"'{path}' cannot be {ByteSize.Format(length)} ({length} bytes): its file system refused the size (EFBIG: file too large).", path, inner)
            : limits.Refusal(path, length, inner);
    }

    private KvmStorageException Refusal(string path, ulong length, Exception? inner)
    {
        string fileSystem = Type is null ? "its file system" : $"its {Type} file system";
        string why = MaxFileSize is ulong max
            ? $"{fileSystem} holds files of at most {ByteSize.Format(max)} ({max} bytes)"
            : $"{fileSystem} refused the size (EFBIG: file too large)";
        return new KvmStorageException(ErrorKind.InvalidArgument, ErrorIds.FileTooLarge, $"'{path}' cannot be {ByteSize.Format(length)} ({length} bytes): {why}.", path, inner);
    }

    /// <summary>The type /proc/self/mountinfo gives the mount that holds <paramref name="directory"/> (ext4 rather than the magic's ext2/ext3/ext4).</summary>
    private static unsafe string? MountedType(string directory)
    {
        byte* buffer = stackalloc byte[256];
        if (NativeMethods.statx(NativeMethods.AT_FDCWD, directory, 0, NativeMethods.STATX_BASIC_STATS, buffer) != 0)
        {
            return null;
        }

        var span = new ReadOnlySpan<byte>(buffer, 256);
        string device = $"{BinaryPrimitives.ReadUInt32LittleEndian(span[136..])}:{BinaryPrimitives.ReadUInt32LittleEndian(span[140..])}";
        try
        {
            // "36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext4 /dev/root rw": the type follows the " - ".
            foreach (string line in File.ReadLines("/proc/self/mountinfo"))
            {
                string[] fields = line.Split(' ');
                int separator = Array.IndexOf(fields, "-");
                if (fields.Length > 2 && fields[2] == device && separator > 0 && separator + 1 < fields.Length)
                {
                    return fields[separator + 1];
                }
            }
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }

        return null;
    }
}
