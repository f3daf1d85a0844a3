using System.Buffers.Binary;
using Microsoft.Win32.SafeHandles;
using static KvmStorage.Core.Images.ForeignImageFile;

namespace KvmStorage.Core.Images.Vpc;

/// <summary>
/// Virtual PC / Hyper-V VHD ("vpc"). Dynamic disks carry the footer at 0 and at the end; fixed disks only
/// at the end. qemu 7.2 probes only offset 0, so it calls a fixed VHD "raw"; this reader recognises it
/// and reports what <c>qemu-img info -f vpc</c> says.
/// </summary>
public sealed class VpcReader : IImageFormatReader
{
    private const ulong MaxSectors = 0xff000000;
    private const ulong MaxGeometry = 65535UL * 16 * 255;
    private static readonly byte[] SparseCookie = "cxsparse"u8.ToArray();

    public ImageFormat Format => ImageFormat.Vpc;

    /// <summary>After every format with a signature at offset 0: a fixed VHD is only recognisable by its trailer.</summary>
    public int Priority => 80;

    public bool Probe(ImageProbe probe)
    {
        ArgumentNullException.ThrowIfNull(probe);
        if (probe.Head.AsSpan().StartsWith(VpcHeaders.Cookie))
        {
            return true;
        }

        return probe.FileLength >= VpcHeaders.FooterLength && probe.Tail.Length >= VpcHeaders.FooterLength && probe.Tail.AsSpan(probe.Tail.Length - VpcHeaders.FooterLength).StartsWith(VpcHeaders.Cookie);
    }

    public ImageInfo ReadInfo(SafeFileHandle handle, ImageProbe probe, ulong actualSize)
    {
        ArgumentNullException.ThrowIfNull(handle);
        ArgumentNullException.ThrowIfNull(probe);
        string path = Path.GetFullPath(probe.Path);
        ulong length = probe.FileLength;
        if (length < VpcHeaders.FooterLength)
        {
            throw Invalid(ForeignFormatErrorIds.VhdFooterInvalid, path, "the file is too small for a VHD footer.");
        }

        byte[] footer = ReadExactly(handle, path, length, 0, VpcHeaders.FooterLength, "VHD footer copy");
        bool dynamic = true;
        if (!footer.AsSpan().StartsWith(VpcHeaders.Cookie))
        {
            footer = ReadExactly(handle, path, length, length - VpcHeaders.FooterLength, VpcHeaders.FooterLength, "VHD footer");
            if (!footer.AsSpan().StartsWith(VpcHeaders.Cookie))
            {
                throw Invalid(ForeignFormatErrorIds.VhdFooterInvalid, path, "invalid VPC image (no \"conectix\" footer).");
            }

            dynamic = false;
        }

        uint checksum = BinaryPrimitives.ReadUInt32BigEndian(footer.AsSpan(64));
        uint sum = 0;
        for (int i = 0; i < VpcHeaders.FooterLength; i++)
        {
            if (i is < 64 or >= 68)
            {
                sum += footer[i];
            }
        }

        if (~sum != checksum)
        {
            throw Invalid(ForeignFormatErrorIds.VhdChecksumMismatch, path, "incorrect header checksum.");
        }

        ReadOnlySpan<byte> f = footer;
        ReadOnlySpan<byte> creator = f.Slice(28, 4);
        ulong currentSize = BinaryPrimitives.ReadUInt64BigEndian(f[48..]);
        ulong totalSectors = (ulong)BinaryPrimitives.ReadUInt16BigEndian(f[56..]) * f[58] * f[59];

        // qemu 7.2 (block/vpc.c): Virtual PC and qemu size by CHS geometry, Hyper-V, disk2vhd, XenServer
        // and XenConverter by current_size; a maximal geometry also means current_size.
        bool useChs = !creator.SequenceEqual("win "u8) && !creator.SequenceEqual("qem2"u8) && !creator.SequenceEqual("d2v "u8)
            && !creator.SequenceEqual("CTXS"u8) && !creator.SequenceEqual("tap\0"u8);
        if (!useChs || totalSectors == MaxGeometry)
        {
            totalSectors = currentSize / 512;
        }

        if (totalSectors > MaxSectors)
        {
            throw Invalid(ForeignFormatErrorIds.VhdFooterInvalid, path, "disk size is too large (over 2040 GiB).");
        }

        uint? clusterSize = null;
        if (dynamic)
        {
            ReadOnlySpan<byte> d = ReadExactly(handle, path, length, VpcHeaders.DynamicHeaderOffset(f), 512, "VHD dynamic disk header");
            if (!d.StartsWith(SparseCookie))
            {
                throw Invalid(ForeignFormatErrorIds.VhdDynamicHeaderInvalid, path, "invalid dynamic header magic.");
            }

            (ulong tableOffset, uint maxTableEntries, uint blockSize) = VpcHeaders.ReadDynamicHeader(d);
            if (blockSize < 512 || (blockSize & (blockSize - 1)) != 0)
            {
                throw Invalid(ForeignFormatErrorIds.VhdDynamicHeaderInvalid, path, $"invalid block size {blockSize}.");
            }

            if (totalSectors * 512 / blockSize > uint.MaxValue)
            {
                throw Invalid(ForeignFormatErrorIds.VhdDynamicHeaderInvalid, path, "too many blocks.");
            }

            if ((ulong)maxTableEntries * blockSize < totalSectors * 512)
            {
                throw Invalid(ForeignFormatErrorIds.VhdDynamicHeaderInvalid, path, "page table too small.");
            }

            if (maxTableEntries > int.MaxValue / 4)
            {
                throw Invalid(ForeignFormatErrorIds.VhdDynamicHeaderInvalid, path, $"max table entries too large ({maxTableEntries}).");
            }

            CheckBlocksInsideFile(handle, path, length, tableOffset, maxTableEntries, blockSize);
            if (VpcHeaders.DiskType(f) != VpcHeaders.TypeFixed)
            {
                clusterSize = blockSize;
            }
        }

        return new ImageInfo
        {
            DiskType = VpcHeaders.DiskType(f) switch
            {
                VpcHeaders.TypeFixed => DiskType.Fixed,
                VpcHeaders.TypeDifferencing => DiskType.Differencing,
                _ => DiskType.Dynamic,
            },
            LogicalSectorSize = 512,
            PhysicalSectorSize = 512,
            Path = path,
            ImageFormat = ImageFormat.Vpc,
            VirtualSize = totalSectors * 512,
            ActualSize = actualSize,
            FileLength = length,
            ClusterSize = clusterSize,
        };
    }

    /// <summary>qemu refuses images whose BAT points past the end of the file ("the image has been truncated").</summary>
    private static void CheckBlocksInsideFile(SafeFileHandle handle, string path, ulong length, ulong tableOffset, uint entries, uint blockSize)
    {
        ulong tableBytes = (ulong)entries * 4;
        if (tableOffset > length || tableBytes > length - tableOffset)
        {
            throw Invalid(ForeignFormatErrorIds.ImageTruncated, path, "the block allocation table lies beyond the end of the file.");
        }

        ulong bitmapSize = VpcHeaders.BitmapSize(blockSize);
        ulong freeOffset = (tableOffset + tableBytes + 511) & ~511UL;
        const int Chunk = 64 * 1024;
        // The table is bounded by the file length checked above, and read in fixed-size pieces.
        for (ulong done = 0; done < tableBytes; done += Chunk)
        {
            int n = (int)Math.Min(Chunk, tableBytes - done);
            byte[] piece = ReadExactly(handle, path, length, tableOffset + done, n, "VHD block allocation table");
            for (int i = 0; i + 4 <= n; i += 4)
            {
                uint entry = BinaryPrimitives.ReadUInt32BigEndian(piece.AsSpan(i));
                if (entry != VpcHeaders.Unallocated)
                {
                    ulong next = (512UL * entry) + bitmapSize + blockSize;
                    freeOffset = Math.Max(freeOffset, next);
                }
            }
        }

        if (freeOffset > length)
        {
            throw Invalid(ForeignFormatErrorIds.ImageTruncated, path, "free_data_block_offset points after the end of file; the image has been truncated.");
        }
    }
}
