using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.IO;

/// <summary>
/// Positional reads that go on until the buffer is full (a single <see cref="RandomAccess.Read(SafeFileHandle, Span{byte}, long)"/>
/// may return fewer bytes than asked), fsync and hole punching of an open file. What the end of the file means is the
/// caller's: zeros (qemu's file protocol), a malformed image, or a file that shrank while it was read.
/// </summary>
internal static class PositionalFile
{
    /// <summary>Reads at <paramref name="offset"/> until <paramref name="buffer"/> is full or the file ends; returns the bytes read.</summary>
    public static int ReadUntilEnd(SafeFileHandle handle, Span<byte> buffer, ulong offset)
    {
        int done = 0;
        while (done < buffer.Length)
        {
            int n = RandomAccess.Read(handle, buffer[done..], (long)offset + done);
            if (n == 0)
            {
                break;
            }

            done += n;
        }

        return done;
    }

    /// <summary>Reads at <paramref name="offset"/>; what lies past the end of the file reads as zeros.</summary>
    public static void ReadZeroPadded(SafeFileHandle handle, Span<byte> buffer, ulong offset)
    {
        int done = ReadUntilEnd(handle, buffer, offset);
        buffer[done..].Clear();
    }

    /// <summary>fsync(2): everything written through <paramref name="handle"/> is durable when this returns.</summary>
    public static void Flush(SafeFileHandle handle)
    {
        if (NativeMethods.fsync((int)handle.DangerousGetHandle()) != 0)
        {
            throw new IOException("fsync failed.");
        }
    }

    /// <summary>
    /// Deallocates [<paramref name="offset"/>, +<paramref name="length"/>) without changing the file's length, so the range
    /// reads as zeros. False when the file system cannot punch holes; <see cref="Marshal.GetLastPInvokeError"/> tells why.
    /// </summary>
    public static bool TryPunchHole(SafeFileHandle handle, ulong offset, ulong length) =>
        NativeMethods.fallocate(handle, NativeMethods.FALLOC_FL_PUNCH_HOLE | NativeMethods.FALLOC_FL_KEEP_SIZE, (long)offset, (long)length) == 0;
}
