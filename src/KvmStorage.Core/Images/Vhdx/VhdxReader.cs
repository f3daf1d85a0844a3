using System.Buffers.Binary;
using Microsoft.Win32.SafeHandles;
using static KvmStorage.Core.Images.ForeignImageFile;

namespace KvmStorage.Core.Images.Vhdx;

/// <summary>
/// Hyper-V VHDX (MS-VHDX): two CRC-32C-protected headers at 64 and 128 KiB, region tables at 192 and
/// 256 KiB, and the metadata region's Virtual Disk Size and File Parameters items. Checks follow
/// qemu's block/vhdx.c so that failures match <c>qemu-img info</c>.
/// </summary>
public sealed class VhdxReader : IImageFormatReader
{
    private const ulong HeaderOffset1 = 64 * 1024;
    private const ulong HeaderOffset2 = 128 * 1024;
    private const int HeaderLength = 4096;
    private const ulong Mib = 1024 * 1024;
    private const ulong MaxImageSize = 64UL * 1024 * 1024 * 1024 * 1024;

    public ImageFormat Format => ImageFormat.Vhdx;

    public int Priority => 30;

    public bool Probe(ImageProbe probe)
    {
        ArgumentNullException.ThrowIfNull(probe);
        return probe.Head.AsSpan().StartsWith("vhdxfile"u8);
    }

    public ImageInfo ReadInfo(SafeFileHandle handle, ImageProbe probe, ulong actualSize)
    {
        ArgumentNullException.ThrowIfNull(handle);
        ArgumentNullException.ThrowIfNull(probe);
        string path = Path.GetFullPath(probe.Path);
        ulong length = probe.FileLength;
        byte[] identifier = ReadExactly(handle, path, length, 0, 8, "VHDX file identifier");
        if (!identifier.AsSpan().SequenceEqual("vhdxfile"u8))
        {
            throw Invalid(ForeignFormatErrorIds.VhdxHeaderInvalid, path, "not a VHDX file (no \"vhdxfile\" identifier).");
        }

        SelectHeader(handle, path, length);
        (ulong metadataOffset, uint metadataLength) = ReadRegionTable(handle, path, length);
        (ulong virtualSize, uint blockSize, uint flags, uint logicalSize, uint physicalSize) = ReadMetadata(handle, path, length, metadataOffset, metadataLength);
        return new ImageInfo
        {
            DiskType = (flags & 1) != 0 ? DiskType.Fixed : DiskType.Dynamic,
            LogicalSectorSize = logicalSize,
            PhysicalSectorSize = physicalSize,
            Path = path,
            ImageFormat = ImageFormat.Vhdx,
            VirtualSize = virtualSize,
            ActualSize = actualSize,
            FileLength = length,
            ClusterSize = blockSize,
        };
    }

    private static bool IsValid(ReadOnlySpan<byte> block, ReadOnlySpan<byte> signature)
    {
        if (!block.StartsWith(signature))
        {
            return false;
        }

        // The checksum covers the whole block with its own field (bytes 4..8) taken as zero.
        uint stored = BinaryPrimitives.ReadUInt32LittleEndian(block[4..]);
        uint crc = Crc32C.Update(0xFFFFFFFF, block[..4]);
        crc = Crc32C.Update(crc, [0, 0, 0, 0]);
        crc = ~Crc32C.Update(crc, block[8..]);
        return crc == stored;
    }

    /// <summary>vhdx_parse_header: the valid header with the higher sequence number; identical twins are fine.</summary>
    private static void SelectHeader(SafeFileHandle handle, string path, ulong length)
    {
        byte[] h1 = ReadAtMost(handle, path, length, HeaderOffset1, HeaderLength, "VHDX header 1");
        byte[] h2 = ReadAtMost(handle, path, length, HeaderOffset2, HeaderLength, "VHDX header 2");
        bool v1 = h1.Length == HeaderLength && IsValid(h1, "head"u8) && BinaryPrimitives.ReadUInt16LittleEndian(h1.AsSpan(66)) == 1;
        bool v2 = h2.Length == HeaderLength && IsValid(h2, "head"u8) && BinaryPrimitives.ReadUInt16LittleEndian(h2.AsSpan(66)) == 1;
        if (!v1 && !v2)
        {
            throw Invalid(ForeignFormatErrorIds.VhdxHeaderInvalid, path, "no valid VHDX header found (signature, version or CRC-32C).");
        }

        if (v1 && v2)
        {
            ulong s1 = BinaryPrimitives.ReadUInt64LittleEndian(h1.AsSpan(8));
            ulong s2 = BinaryPrimitives.ReadUInt64LittleEndian(h2.AsSpan(8));
            // Disk2VHD writes two identical headers with equal sequence numbers; anything else equal is ambiguous.
            if (s1 == s2 && !h1.AsSpan(0, 80).SequenceEqual(h2.AsSpan(0, 80)))
            {
                throw Invalid(ForeignFormatErrorIds.VhdxHeaderInvalid, path, "both VHDX headers are valid with the same sequence number but differ.");
            }
        }
    }

    private static (ulong Offset, uint Length) ReadRegionTable(SafeFileHandle handle, string path, ulong length)
    {
        byte[] table = ReadExactly(handle, path, length, VhdxTables.RegionTableOffset, VhdxTables.RegionTableLength, "VHDX region table");
        if (!IsValid(table, "regi"u8))
        {
            throw Invalid(ForeignFormatErrorIds.VhdxRegionTableInvalid, path, "region table signature or CRC-32C is invalid.");
        }

        uint count = VhdxTables.RegionCount(table);
        if (count > VhdxTables.MaxEntries)
        {
            throw Invalid(ForeignFormatErrorIds.VhdxRegionTableInvalid, path, $"region table has {count} entries (at most {VhdxTables.MaxEntries}).");
        }

        ulong? metadataOffset = null;
        uint metadataLength = 0;
        bool bat = false;
        var seen = new List<(ulong Start, ulong End)>();
        foreach ((Guid guid, ulong offset, uint regionLength, bool required) in VhdxTables.Regions(table))
        {
            if (offset % Mib != 0 || regionLength % Mib != 0 || regionLength == 0 || offset > ulong.MaxValue - regionLength)
            {
                throw Invalid(ForeignFormatErrorIds.VhdxRegionTableInvalid, path, "a region is not 1 MiB aligned.");
            }

            foreach ((ulong start, ulong end) in seen)
            {
                if (offset < end && offset + regionLength > start)
                {
                    throw Invalid(ForeignFormatErrorIds.VhdxRegionTableInvalid, path, "regions overlap.");
                }
            }

            seen.Add((offset, offset + regionLength));
            if (guid == VhdxTables.BatRegion)
            {
                bat = true;
            }
            else if (guid == VhdxTables.MetadataRegion)
            {
                metadataOffset = offset;
                metadataLength = regionLength;
            }
            else if (required)
            {
                throw Invalid(ForeignFormatErrorIds.VhdxUnsupported, path, $"unsupported required region {guid}.");
            }
        }

        if (!bat || metadataOffset is null)
        {
            throw Invalid(ForeignFormatErrorIds.VhdxRegionTableInvalid, path, "the BAT or metadata region is missing.");
        }

        return (metadataOffset.Value, metadataLength);
    }

    private static (ulong VirtualSize, uint BlockSize, uint Flags, uint LogicalSize, uint PhysicalSize) ReadMetadata(SafeFileHandle handle, string path, ulong length, ulong regionOffset, uint regionLength)
    {
        byte[] table = ReadExactly(handle, path, length, regionOffset, VhdxTables.MetadataTableLength, "VHDX metadata table");
        if (!table.AsSpan().StartsWith("metadata"u8))
        {
            throw Invalid(ForeignFormatErrorIds.VhdxMetadataInvalid, path, "metadata table signature is invalid.");
        }

        ushort count = VhdxTables.MetadataCount(table);
        if (count > VhdxTables.MaxEntries)
        {
            throw Invalid(ForeignFormatErrorIds.VhdxMetadataInvalid, path, $"metadata table has {count} entries (at most {VhdxTables.MaxEntries}).");
        }

        byte[]? parameters = null;
        byte[]? size = null;
        byte[]? logical = null;
        byte[]? physical = null;
        bool page83 = false;
        foreach ((Guid guid, uint offset, uint itemLength, bool required) in VhdxTables.MetadataItems(table))
        {
            byte[] Item(int expected)
            {
                if (itemLength < expected || (ulong)offset + (ulong)expected > regionLength)
                {
                    throw Invalid(ForeignFormatErrorIds.VhdxMetadataInvalid, path, $"metadata item {guid} lies outside the metadata region.");
                }

                return ReadExactly(handle, path, length, regionOffset + offset, expected, $"VHDX metadata item {guid}");
            }

            if (guid == VhdxTables.FileParameters)
            {
                parameters = Item(8);
            }
            else if (guid == VhdxTables.VirtualDiskSize)
            {
                size = Item(8);
            }
            else if (guid == VhdxTables.LogicalSectorSize)
            {
                logical = Item(4);
            }
            else if (guid == VhdxTables.PhysicalSectorSize)
            {
                physical = Item(4);
            }
            else if (guid == VhdxTables.Page83Data)
            {
                page83 = true;
            }
            else if (guid == VhdxTables.ParentLocator || required)
            {
                throw Invalid(ForeignFormatErrorIds.VhdxUnsupported, path, $"unsupported metadata item {guid} (differencing VHDX images are not supported).");
            }
        }

        if (parameters is null || size is null || logical is null || physical is null || !page83)
        {
            throw Invalid(ForeignFormatErrorIds.VhdxMetadataInvalid, path, "a required metadata item is missing.");
        }

        uint blockSize = BinaryPrimitives.ReadUInt32LittleEndian(parameters);
        uint flags = BinaryPrimitives.ReadUInt32LittleEndian(parameters.AsSpan(4));
        ulong virtualSize = BinaryPrimitives.ReadUInt64LittleEndian(size);
        uint logicalSize = BinaryPrimitives.ReadUInt32LittleEndian(logical);
        uint physicalSize = BinaryPrimitives.ReadUInt32LittleEndian(physical);
        if ((flags & 2) != 0)
        {
            throw Invalid(ForeignFormatErrorIds.VhdxUnsupported, path, "differencing VHDX images are not supported.");
        }

        if (blockSize < Mib || blockSize > 256 * Mib || (blockSize & (blockSize - 1)) != 0)
        {
            throw Invalid(ForeignFormatErrorIds.VhdxMetadataInvalid, path, $"block size {blockSize} is invalid.");
        }

        if (logicalSize is not (512 or 4096) || physicalSize is not (512 or 4096))
        {
            throw Invalid(ForeignFormatErrorIds.VhdxMetadataInvalid, path, "sector size must be 512 or 4096.");
        }

        if (virtualSize > MaxImageSize)
        {
            throw Invalid(ForeignFormatErrorIds.VhdxMetadataInvalid, path, $"virtual size {virtualSize} exceeds 64 TiB.");
        }

        return (virtualSize, blockSize, flags, logicalSize, physicalSize);
    }
}
