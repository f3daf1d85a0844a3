using System.Buffers.Binary;
using KvmStorage.Core.Errors;
using KvmStorage.Core.IO;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Qcow2;

/// <summary>
/// Grows and shrinks qcow2 images in place. Every step leaves a consistent image: new clusters are
/// refcounted before anything points at them, and the header switches to a new table in one sector write,
/// so a crash can at worst leak clusters, never corrupt the image.
/// </summary>
internal static class Qcow2Resizer
{
    public static void Resize(SafeFileHandle handle, string path, ulong newSize, ImageResizeOptions options)
    {
        ulong fileLength = (ulong)RandomAccess.GetLength(handle);
        byte[] head = ImageIo.ReadBytes(handle, 0, (int)Math.Min(64UL * 1024, fileLength), path);
        Qcow2Header header = Qcow2Reader.ReadHeader(handle, head, fileLength, path);
        if (header.Dirty)
        {
            throw ImageErrors.Dirty(path);
        }

        if (header.Corrupt)
        {
            throw ImageErrors.MarkedCorrupt(path);
        }

        if (header.CryptMethod != 0 || (header.IncompatibleFeatures & Qcow2Header.IncompatDataFile) != 0 || header.HasBitmaps)
        {
            throw ImageErrors.NotSupported(ImageErrorIds.UnsupportedOperation, path, "resizing encrypted images, images with an external data file or with persistent bitmaps is not supported.");
        }

        if (newSize % 512 != 0)
        {
            throw ImageErrors.Argument(ImageErrorIds.InvalidImageSize, $"The new size {newSize} must be a multiple of 512 bytes.", path);
        }

        if (newSize == header.Size)
        {
            return;
        }

        if (newSize < header.Size)
        {
            Shrink(handle, path, header, head, newSize, options);
        }
        else
        {
            Grow(handle, path, header, head, fileLength, newSize, options);
        }
    }

    private static void Shrink(SafeFileHandle handle, string path, Qcow2Header header, byte[] head, ulong newSize, ImageResizeOptions options)
    {
        if (!options.AllowShrink)
        {
            throw new KvmStorageException(ErrorKind.InvalidOperation, ImageErrorIds.ShrinkNotAllowed, $"Shrinking '{path}' from {header.Size} to {newSize} bytes must be allowed explicitly.", path);
        }

        if (header.SnapshotCount > 0)
        {
            throw new KvmStorageException(ErrorKind.InvalidOperation, ImageErrorIds.ShrinkWithSnapshots, $"'{path}' has internal snapshots; it cannot be shrunk.", path);
        }

        ulong cs = header.ClusterSize;
        ulong firstGone = Qcow2Layout.CeilDiv(newSize, cs);
        ulong l2Entries = header.L2Entries;
        byte[] l1 = header.L1Size == 0 ? [] : ImageIo.ReadBytes(handle, header.L1TableOffset, (int)(header.L1Size * 8), path);
        byte[] l2 = new byte[cs];
        for (ulong i = firstGone / l2Entries; i < header.L1Size; i++)
        {
            ulong l2Offset = Qcow2Entries.HostOffset(BinaryPrimitives.ReadUInt64BigEndian(l1.AsSpan((int)(i * 8))));
            if (l2Offset == 0)
            {
                continue;
            }

            CheckCluster(l2Offset, cs, handle, path);
            ImageIo.ReadExactly(handle, l2, l2Offset, path);
            for (ulong j = 0; j < l2Entries; j++)
            {
                if ((i * l2Entries) + j < firstGone)
                {
                    continue;
                }

                ReadOnlySpan<byte> entry = l2.AsSpan((int)(j * (ulong)header.L2EntryBytes), header.L2EntryBytes);
                if (entry.ContainsAnyExcept((byte)0))
                {
                    throw new KvmStorageException(
                        ErrorKind.InvalidOperation,
                        ImageErrorIds.ShrinkWouldLoseData,
                        $"'{path}' has data at guest offset {((i * l2Entries) + j) * cs}, past the new size {newSize}.",
                        path);
                }
            }
        }

        WriteHeaderFields(handle, head, newSize, header.L1Size, header.L1TableOffset);
        PositionalFile.Flush(handle);
    }

    private static void Grow(SafeFileHandle handle, string path, Qcow2Header header, byte[] head, ulong fileLength, ulong newSize, ImageResizeOptions options)
    {
        if (options.Preallocation != Preallocation.Off)
        {
            throw ImageErrors.NotSupported(ImageErrorIds.UnsupportedOperation, path, $"growing qcow2 images with preallocation '{options.Preallocation}' is not supported yet.");
        }

        ulong newL1Size = Qcow2Header.L1EntriesFor(newSize, header.L2Span);
        if (newL1Size * 8 > Qcow2Header.MaxL1Bytes)
        {
            throw ImageErrors.Argument(ImageErrorIds.InvalidImageSize, $"{newSize} bytes need an L1 table over qemu's 32 MiB limit.", path);
        }

        if (newL1Size <= header.L1Size)
        {
            WriteHeaderFields(handle, head, newSize, header.L1Size, header.L1TableOffset);
            PositionalFile.Flush(handle);
            return;
        }

        ulong cs = header.ClusterSize;
        var refcounts = new RefcountEditor(handle, path, header, fileLength);
        ulong l1Clusters = Qcow2Layout.CeilDiv(newL1Size * 8, cs);
        RefcountEditor.Allocation allocation = refcounts.Allocate(l1Clusters);
        ulong newL1Offset = allocation.DataStart * cs;

        // qemu's overlap check: the new table may land on no metadata; checked before the first write.
        refcounts.Map.EnsureFree(newL1Offset, l1Clusters * cs, Qcow2MetadataKind.None);

        // qcow2.rst "Host cluster management": a cluster's refcount is made non-zero before anything references it.
        refcounts.Commit(allocation);

        byte[] l1 = new byte[l1Clusters * cs];
        if (header.L1Size > 0)
        {
            ImageIo.ReadExactly(handle, l1.AsSpan(0, (int)(header.L1Size * 8)), header.L1TableOffset, path);
        }

        ImageIo.Write(handle, l1, newL1Offset);
        PositionalFile.Flush(handle);

        // The header switches to the new L1 in one sector write, after the table is durable.
        WriteHeaderFields(handle, head, newSize, (uint)newL1Size, newL1Offset);
        PositionalFile.Flush(handle);

        // Only now is the old L1 unreferenced: freeing it earlier could corrupt, freeing it late only leaks on a crash.
        if (header.L1Size > 0)
        {
            refcounts.Free(header.L1TableOffset / cs, Qcow2Layout.CeilDiv(header.L1Size * 8UL, cs));
            PositionalFile.Flush(handle);
        }
    }

    /// <summary>Rewrites size, l1_size and l1_table_offset (bytes 24..47) in one write within the first sector.</summary>
    private static void WriteHeaderFields(SafeFileHandle handle, byte[] head, ulong size, uint l1Size, ulong l1Offset)
    {
        byte[] fields = head.AsSpan(24, 24).ToArray();
        BinaryPrimitives.WriteUInt64BigEndian(fields, size);
        BinaryPrimitives.WriteUInt32BigEndian(fields.AsSpan(12), l1Size);
        BinaryPrimitives.WriteUInt64BigEndian(fields.AsSpan(16), l1Offset);
        ImageIo.Write(handle, fields, 24);
        fields.CopyTo(head, 24);
    }

    internal static void CheckCluster(ulong offset, ulong clusterSize, SafeFileHandle handle, string path)
    {
        ulong length = (ulong)RandomAccess.GetLength(handle);
        if (offset % clusterSize != 0 || offset > length || clusterSize > length - offset)
        {
            throw ImageErrors.Invalid(ImageErrorIds.InvalidMetadata, path, $"a metadata cluster at 0x{offset:x} is misaligned or past the end of the file.");
        }
    }
}
