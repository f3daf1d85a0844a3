using KvmStorage.Core.IO;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images;

/// <summary>Positional reads and writes of image metadata (and data) that fail with typed errors instead of short counts.</summary>
internal static class ImageIo
{
    public static void ReadExactly(SafeFileHandle handle, Span<byte> buffer, ulong offset, string path)
    {
        int done = PositionalFile.ReadUntilEnd(handle, buffer, offset);
        if (done < buffer.Length)
        {
            throw ImageErrors.Invalid(ImageErrorIds.TableOutOfBounds, path, $"unexpected end of file at 0x{offset + (ulong)done:x}.");
        }
    }

    public static byte[] ReadBytes(SafeFileHandle handle, ulong offset, int length, string path)
    {
        byte[] buffer = new byte[length];
        ReadExactly(handle, buffer, offset, path);
        return buffer;
    }

    public static void Write(SafeFileHandle handle, ReadOnlySpan<byte> data, ulong offset) => RandomAccess.Write(handle, data, (long)offset);
}
