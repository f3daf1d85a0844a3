using System.Buffers.Binary;
using System.Text;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Qcow2;

/// <summary>
/// Rewrites the backing file name and backing-format extension of a qcow2 image (<c>qemu-img rebase -u</c>).
/// Every other header field and extension (feature table, bitmaps, data file, crypto) is kept byte for byte.
/// </summary>
/// <remarks>
/// Header, extensions and backing name all live in cluster 0. The new header area is built in memory and written
/// with one positional write starting at offset 0, then flushed: the same single-write update qemu makes. A name
/// that does not fit in cluster 0 is refused before anything is written.
/// </remarks>
internal static class Qcow2BackingEditor
{
    public static void SetBacking(SafeFileHandle handle, string path, string? backingFile, string? backingFormat)
    {
        ulong fileLength = (ulong)RandomAccess.GetLength(handle);
        byte[] probe = ImageIo.ReadBytes(handle, 0, (int)Math.Min(fileLength, (ulong)Qcow2Header.V2HeaderLength), path);
        uint clusterBits = probe.Length >= 24 ? BinaryPrimitives.ReadUInt32BigEndian(probe.AsSpan(20)) : 0;
        int clusterSize = 1 << (int)Math.Clamp(clusterBits, Qcow2Header.MinClusterBits, Qcow2Header.MaxClusterBits);
        byte[] old = ImageIo.ReadBytes(handle, 0, (int)Math.Min(fileLength, (ulong)clusterSize), path);
        Qcow2Header header = Qcow2Header.Parse(old, fileLength, path);
        byte[] updated = Build(old, header, path, backingFile, backingFormat);
        ImageIo.Write(handle, updated, 0);
        RandomAccess.FlushToDisk(handle);
    }

    /// <summary>The new contents of cluster 0's used part, at least as long as the old used part (the rest zeroed).</summary>
    internal static byte[] Build(byte[] old, Qcow2Header header, string path, string? backingFile, string? backingFormat)
    {
        int clusterSize = (int)header.ClusterSize;
        int headerLength = (int)header.HeaderLength;
        var extensions = new List<(uint Type, byte[] Data)>();
        int oldEnd = ReadExtensions(old, header, extensions);
        if (header.BackingFileOffset != 0)
        {
            oldEnd = Math.Max(oldEnd, (int)(header.BackingFileOffset + header.BackingFileSize));
        }

        extensions.RemoveAll(e => e.Type == Qcow2Header.ExtBackingFormat);
        byte[]? name = backingFile is null ? null : Encoding.UTF8.GetBytes(backingFile);
        if (name is not null && (name.Length == 0 || name.Length > Qcow2Header.MaxBackingNameLength || name.Contains((byte)0)))
        {
            throw ImageErrors.Argument(ImageErrorIds.InvalidBackingName, $"The backing file name must be 1 to {Qcow2Header.MaxBackingNameLength} bytes without NUL.", path);
        }

        if (name is not null && backingFormat is not null)
        {
            // qemu writes the backing format first.
            extensions.Insert(0, (Qcow2Header.ExtBackingFormat, Encoding.ASCII.GetBytes(backingFormat)));
        }

        int length = headerLength;
        foreach ((uint _, byte[] data) in extensions)
        {
            length += 8 + ((data.Length + 7) & ~7);
        }

        length += 8; // end marker
        int nameOffset = length;
        length += name?.Length ?? 0;
        if (length > clusterSize)
        {
            throw ImageErrors.Argument(ImageErrorIds.InvalidBackingName, $"The header extensions and the backing file name ({length} bytes) do not fit in the first cluster ({clusterSize} bytes).", path);
        }

        byte[] result = new byte[Math.Max(length, Math.Min(oldEnd, clusterSize))];
        old.AsSpan(0, headerLength).CopyTo(result);
        int offset = headerLength;
        foreach ((uint type, byte[] data) in extensions)
        {
            BinaryPrimitives.WriteUInt32BigEndian(result.AsSpan(offset), type);
            BinaryPrimitives.WriteUInt32BigEndian(result.AsSpan(offset + 4), (uint)data.Length);
            data.CopyTo(result, offset + 8);
            offset += 8 + ((data.Length + 7) & ~7);
        }

        // result[offset .. offset + 8) stays zero: the end-of-extensions marker.
        if (name is null)
        {
            BinaryPrimitives.WriteUInt64BigEndian(result.AsSpan(8), 0);
            BinaryPrimitives.WriteUInt32BigEndian(result.AsSpan(16), 0);
        }
        else
        {
            name.CopyTo(result, nameOffset);
            BinaryPrimitives.WriteUInt64BigEndian(result.AsSpan(8), (ulong)nameOffset);
            BinaryPrimitives.WriteUInt32BigEndian(result.AsSpan(16), (uint)name.Length);
        }

        return result;
    }

    /// <summary>Collects the extensions (all but the end marker) and returns where the last one ends.</summary>
    internal static int ReadExtensions(byte[] head, Qcow2Header header, List<(uint Type, byte[] Data)> extensions)
    {
        int limit = (int)Math.Min(header.BackingFileOffset != 0 ? header.BackingFileOffset : header.ClusterSize, (ulong)head.Length);
        int offset = (int)header.HeaderLength;
        while (offset + 8 <= limit)
        {
            uint type = BinaryPrimitives.ReadUInt32BigEndian(head.AsSpan(offset));
            int length = (int)BinaryPrimitives.ReadUInt32BigEndian(head.AsSpan(offset + 4));
            offset += 8;
            if (type == Qcow2Header.ExtEnd)
            {
                break;
            }

            // Qcow2Header.Parse already refused extensions that run past the limit.
            extensions.Add((type, head.AsSpan(offset, length).ToArray()));
            offset += (length + 7) & ~7;
        }

        return Math.Min(offset, limit);
    }
}
