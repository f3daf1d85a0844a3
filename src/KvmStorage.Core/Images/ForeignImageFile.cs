using KvmStorage.Core.Errors;
using KvmStorage.Core.IO;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images;

/// <summary>
/// Bounds-checked reads for the foreign-format readers: a structure that the header places beyond
/// the end of the file, or a length that is not bounded by the caller, never reaches an allocation.
/// </summary>
internal static class ForeignImageFile
{
    /// <summary>No single metadata read of these readers needs more; bigger lengths are bugs or hostile values.</summary>
    public const int MaxReadLength = 4 * 1024 * 1024;

    public static KvmStorageException Invalid(string errorId, string path, string message) =>
        new(ErrorKind.InvalidData, errorId, $"'{path}': {message}", path);

    /// <summary>Reads exactly <paramref name="length"/> bytes at <paramref name="offset"/>, or throws <see cref="ForeignFormatErrorIds.ImageTruncated"/>.</summary>
    public static byte[] ReadExactly(SafeFileHandle handle, string path, ulong fileLength, ulong offset, int length, string what)
    {
        if (length < 0 || length > MaxReadLength)
        {
            throw Invalid(ForeignFormatErrorIds.ImageTruncated, path, $"{what} has an unreasonable length ({length} bytes).");
        }

        if (offset > fileLength || (ulong)length > fileLength - offset)
        {
            throw Invalid(ForeignFormatErrorIds.ImageTruncated, path, $"{what} at offset {offset} (+{length} bytes) lies beyond the end of the file ({fileLength} bytes).");
        }

        byte[] buffer = new byte[length];
        ReadInto(handle, path, offset, buffer, what);
        return buffer;
    }

    /// <summary>Reads up to <paramref name="length"/> bytes at <paramref name="offset"/>, fewer at the end of the file.</summary>
    public static byte[] ReadAtMost(SafeFileHandle handle, string path, ulong fileLength, ulong offset, int length, string what)
    {
        if (offset >= fileLength)
        {
            return [];
        }

        int count = (int)Math.Min((ulong)Math.Min(length, MaxReadLength), fileLength - offset);
        byte[] buffer = new byte[count];
        ReadInto(handle, path, offset, buffer, what);
        return buffer;
    }

    private static void ReadInto(SafeFileHandle handle, string path, ulong offset, byte[] buffer, string what)
    {
        try
        {
            if (PositionalFile.ReadUntilEnd(handle, buffer, offset) < buffer.Length)
            {
                // The file shrank between the length check and the read.
                throw Invalid(ForeignFormatErrorIds.ImageTruncated, path, $"{what} at offset {offset} is cut short by the end of the file.");
            }
        }
        catch (IOException e)
        {
            throw new KvmStorageException(ErrorKind.ResourceUnavailable, ForeignFormatErrorIds.ImageTruncated, $"'{path}': reading {what} failed: {e.Message}", path, e);
        }
    }

    /// <summary>The C-string prefix of a fixed-size field: qemu stops at the first NUL.</summary>
    public static string CString(ReadOnlySpan<byte> field)
    {
        int end = field.IndexOf((byte)0);
        return System.Text.Encoding.UTF8.GetString(end < 0 ? field : field[..end]);
    }

    /// <summary>qemu's full-backing-filename: relative names are joined to the image's folder without normalising.</summary>
    public static string ResolveNextTo(string imagePath, string name)
    {
        if (name.StartsWith('/'))
        {
            return name;
        }

        string? folder = Path.GetDirectoryName(imagePath);
        return string.IsNullOrEmpty(folder) ? name : folder + "/" + name;
    }
}
