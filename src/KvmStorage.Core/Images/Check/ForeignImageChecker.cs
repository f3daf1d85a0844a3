using System.Buffers.Binary;
using KvmStorage.Core.Images.Qcow2;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Check;

/// <summary>
/// The structural checks the block-mapped foreign formats allow: every allocation table entry points inside the
/// file and no block (grain) is used twice. The header itself was already validated by the format's reader.
/// </summary>
internal sealed class ForeignImageChecker
{
    private const int MaxFindings = 10_000;
    private static readonly Guid VhdxBatRegion = new("2DC27766-F623-4200-9D64-115E9BFD4A08");
    private static readonly Guid VhdxMetadataRegion = new("8B7CA206-4790-4B9A-B8FE-575F050F886E");
    private static readonly Guid VhdxFileParameters = new("CAA16737-FA36-4D43-B3B6-33F0AA44E76B");
    private static readonly Guid VhdxVirtualDiskSize = new("2FA54224-CD1B-4876-B211-5DBED83BF4B8");
    private static readonly Guid VhdxLogicalSectorSize = new("8141BF1D-A96F-4709-BA47-F233A8FAAB5F");

    private readonly SafeFileHandle handle;
    private readonly string path;
    private readonly ulong length;
    private readonly CancellationToken cancellationToken;
    private readonly List<ImageCorruption> findings = [];
    private ulong corruptions;
    private ulong allocated;
    private ulong total;
    private ulong endOffset;

    public ForeignImageChecker(SafeFileHandle handle, string path, CancellationToken cancellationToken)
    {
        this.handle = handle;
        this.path = path;
        this.cancellationToken = cancellationToken;
        length = (ulong)RandomAccess.GetLength(handle);
    }

    public ImageCheckResult Run(ImageFormat format)
    {
        switch (format)
        {
            case ImageFormat.Vdi: CheckVdi(); break;
            case ImageFormat.Vpc: CheckVpc(); break;
            case ImageFormat.Vmdk: CheckVmdk(); break;
            case ImageFormat.Vhdx: CheckVhdx(); break;
        }

        return new ImageCheckResult
        {
            Path = path,
            ImageFormat = format,
            CorruptionCount = corruptions,
            Corruptions = findings,
            TotalClusters = total,
            AllocatedClusters = allocated,
            ImageEndOffset = endOffset,
        };
    }

    private void Corruption(ulong offset, ImageCorruptionKind kind, string message)
    {
        corruptions++;
        if (findings.Count < MaxFindings)
        {
            findings.Add(new ImageCorruption(offset, kind, message));
        }
    }

    private byte[] Read(ulong offset, ulong count)
    {
        if (offset > length || count > length - offset || count > int.MaxValue)
        {
            throw ImageErrors.Invalid(ImageErrorIds.TableOutOfBounds, path, $"a table at 0x{offset:x} ({count} bytes) lies past the end of the file.");
        }

        return Qcow2Io.ReadBytes(handle, offset, (int)count, path);
    }

    /// <summary>Records a block at [offset, offset + size): inside the file and not shared with another entry.</summary>
    private void Claim(Dictionary<ulong, ulong> owners, ulong entryAt, ulong offset, ulong size, ulong index, string what)
    {
        cancellationToken.ThrowIfCancellationRequested();
        allocated++;
        if (offset > length || size > length - offset)
        {
            Corruption(entryAt, ImageCorruptionKind.PastEndOfFile, $"{what} {index} at 0x{offset:x} lies past the end of the file (0x{length:x}).");
            return;
        }

        endOffset = Math.Max(endOffset, offset + size);
        if (!owners.TryAdd(offset, index))
        {
            Corruption(entryAt, ImageCorruptionKind.ClusterUsedTwice, $"{what} {index} at 0x{offset:x} is also used by {what} {owners[offset]}.");
        }
    }

    /// <summary>qemu's <c>vdi_co_check</c>: each allocated block index below the block count and used once; the count matches the header.</summary>
    private void CheckVdi()
    {
        byte[] h = Read(0, 512);
        uint bmapOffset = BinaryPrimitives.ReadUInt32LittleEndian(h.AsSpan(0x154));
        uint dataOffset = BinaryPrimitives.ReadUInt32LittleEndian(h.AsSpan(0x158));
        uint blockSize = BinaryPrimitives.ReadUInt32LittleEndian(h.AsSpan(0x178));
        uint blockExtra = BinaryPrimitives.ReadUInt32LittleEndian(h.AsSpan(0x17C));
        uint blocks = BinaryPrimitives.ReadUInt32LittleEndian(h.AsSpan(0x180));
        uint blocksAllocated = BinaryPrimitives.ReadUInt32LittleEndian(h.AsSpan(0x184));
        byte[] map = Read(bmapOffset, (ulong)blocks * 4);
        total = blocks;
        var owners = new Dictionary<ulong, ulong>();
        uint counted = 0;
        for (uint block = 0; block < blocks; block++)
        {
            uint entry = BinaryPrimitives.ReadUInt32LittleEndian(map.AsSpan((int)(block * 4)));
            if (entry >= 0xFFFFFFFE)
            {
                continue;
            }

            ulong entryAt = bmapOffset + ((ulong)block * 4);
            if (entry >= blocks)
            {
                allocated++;
                Corruption(entryAt, ImageCorruptionKind.InvalidTableEntry, $"block {block} maps to index {entry}, past the {blocks} blocks of the image.");
                continue;
            }

            counted++;
            Claim(owners, entryAt, dataOffset + ((ulong)entry * (blockSize + (ulong)blockExtra)), blockSize, block, "block");
        }

        if (counted != blocksAllocated)
        {
            Corruption(0x184, ImageCorruptionKind.InvalidTableEntry, $"the header counts {blocksAllocated} allocated blocks, the block map {counted}.");
        }
    }

    /// <summary>Dynamic and differencing VHD: block allocation table entries inside the file, no block used twice.</summary>
    private void CheckVpc()
    {
        byte[] footer = Read(length - 512, 512);
        uint type = BinaryPrimitives.ReadUInt32BigEndian(footer.AsSpan(60));
        if (type == 2)
        {
            return;
        }

        ulong dynamicOffset = BinaryPrimitives.ReadUInt64BigEndian(footer.AsSpan(16));
        byte[] d = Read(dynamicOffset, 1024);
        ulong tableOffset = BinaryPrimitives.ReadUInt64BigEndian(d.AsSpan(16));
        uint entries = BinaryPrimitives.ReadUInt32BigEndian(d.AsSpan(28));
        uint blockSize = BinaryPrimitives.ReadUInt32BigEndian(d.AsSpan(32));
        ulong bitmapSize = ((blockSize / (8 * 512)) + 511) & ~511UL;
        byte[] table = Read(tableOffset, (ulong)entries * 4);
        total = entries;
        var owners = new Dictionary<ulong, ulong>();
        var starts = new List<(ulong Start, uint Index)>();
        for (uint i = 0; i < entries; i++)
        {
            uint sector = BinaryPrimitives.ReadUInt32BigEndian(table.AsSpan((int)(i * 4)));
            if (sector == uint.MaxValue)
            {
                continue;
            }

            ulong start = (ulong)sector * 512;
            Claim(owners, tableOffset + ((ulong)i * 4), start, bitmapSize + blockSize, i, "block");
            starts.Add((start, i));
        }

        // Blocks of one image never overlap: each holds its bitmap and its data.
        starts.Sort();
        for (int k = 1; k < starts.Count; k++)
        {
            if (starts[k].Start != starts[k - 1].Start && starts[k].Start < starts[k - 1].Start + bitmapSize + blockSize)
            {
                Corruption(tableOffset + ((ulong)starts[k].Index * 4), ImageCorruptionKind.ClusterUsedTwice, $"block {starts[k].Index} at 0x{starts[k].Start:x} overlaps block {starts[k - 1].Index}.");
            }
        }
    }

    /// <summary>Hosted sparse extents (monolithicSparse, streamOptimized): grain directory and tables inside the file, no grain used twice.</summary>
    private void CheckVmdk()
    {
        byte[] h = Read(0, Math.Min(512, length));
        if (h.Length < 512 || BinaryPrimitives.ReadUInt32LittleEndian(h) != 0x564D444B)
        {
            // A descriptor file: its extents are other files, checked when given themselves.
            return;
        }

        ulong capacity = BinaryPrimitives.ReadUInt64LittleEndian(h.AsSpan(12));
        ulong grainSectors = BinaryPrimitives.ReadUInt64LittleEndian(h.AsSpan(20));
        uint gtesPerGt = BinaryPrimitives.ReadUInt32LittleEndian(h.AsSpan(44));
        ulong gdOffset = BinaryPrimitives.ReadUInt64LittleEndian(h.AsSpan(56));
        if (gdOffset == ulong.MaxValue)
        {
            // streamOptimized writes the real directory offset into the footer's copy of the header.
            byte[] footer = Read(length - 1024, 512);
            gdOffset = BinaryPrimitives.ReadUInt64LittleEndian(footer.AsSpan(56));
        }

        if (grainSectors == 0 || gtesPerGt == 0)
        {
            return;
        }

        ulong grains = (capacity + grainSectors - 1) / grainSectors;
        ulong tables = (grains + gtesPerGt - 1) / gtesPerGt;
        total = grains;
        byte[] directory = Read(gdOffset * 512, tables * 4);
        var owners = new Dictionary<ulong, ulong>();
        var tableOwners = new Dictionary<ulong, ulong>();
        for (ulong t = 0; t < tables; t++)
        {
            uint gtSector = BinaryPrimitives.ReadUInt32LittleEndian(directory.AsSpan((int)(t * 4)));
            if (gtSector == 0)
            {
                continue;
            }

            ulong gdEntryAt = (gdOffset * 512) + (t * 4);
            ulong gtBytes = (ulong)gtesPerGt * 4;
            ulong gtOffset = (ulong)gtSector * 512;
            if (gtOffset > length || gtBytes > length - gtOffset)
            {
                Corruption(gdEntryAt, ImageCorruptionKind.PastEndOfFile, $"grain table {t} at 0x{gtOffset:x} lies past the end of the file.");
                continue;
            }

            if (!tableOwners.TryAdd(gtOffset, t))
            {
                Corruption(gdEntryAt, ImageCorruptionKind.ClusterUsedTwice, $"grain table {t} at 0x{gtOffset:x} is also grain table {tableOwners[gtOffset]}.");
                continue;
            }

            byte[] gt = Read(gtOffset, gtBytes);
            for (ulong g = 0; g < gtesPerGt && (t * gtesPerGt) + g < grains; g++)
            {
                uint grainSector = BinaryPrimitives.ReadUInt32LittleEndian(gt.AsSpan((int)(g * 4)));

                // 0 is unallocated, 1 reads as zeros.
                if (grainSector <= 1)
                {
                    continue;
                }

                Claim(owners, gtOffset + (g * 4), (ulong)grainSector * 512, 512, (t * gtesPerGt) + g, "grain");
            }
        }
    }

    /// <summary>VHDX payload blocks (fully or partially present) inside the file and never shared.</summary>
    private void CheckVhdx()
    {
        ulong batOffset = 0, batLength = 0, metadataOffset = 0, metadataLength = 0;
        byte[] regions = Read(192 * 1024, 64 * 1024);
        uint count = BinaryPrimitives.ReadUInt32LittleEndian(regions.AsSpan(8));
        for (uint i = 0; i < count && 16 + ((i + 1) * 32) <= regions.Length; i++)
        {
            ReadOnlySpan<byte> entry = regions.AsSpan((int)(16 + (i * 32)), 32);
            var id = new Guid(entry[..16]);
            if (id == VhdxBatRegion)
            {
                batOffset = BinaryPrimitives.ReadUInt64LittleEndian(entry[16..]);
                batLength = BinaryPrimitives.ReadUInt32LittleEndian(entry[24..]);
            }
            else if (id == VhdxMetadataRegion)
            {
                metadataOffset = BinaryPrimitives.ReadUInt64LittleEndian(entry[16..]);
                metadataLength = BinaryPrimitives.ReadUInt32LittleEndian(entry[24..]);
            }
        }

        if (batLength == 0 || metadataLength < 32)
        {
            return;
        }

        byte[] metadata = Read(metadataOffset, Math.Min(metadataLength, 1024 * 1024));
        uint blockSize = 0, sectorSize = 512;
        ulong virtualSize = 0;
        int items = BinaryPrimitives.ReadUInt16LittleEndian(metadata.AsSpan(10));
        for (int i = 0; i < items && 32 + ((i + 1) * 32) <= metadata.Length; i++)
        {
            ReadOnlySpan<byte> entry = metadata.AsSpan(32 + (i * 32), 32);
            var id = new Guid(entry[..16]);
            uint offset = BinaryPrimitives.ReadUInt32LittleEndian(entry[16..]);
            if (offset + 8UL > (ulong)metadata.Length)
            {
                continue;
            }

            if (id == VhdxFileParameters)
            {
                blockSize = BinaryPrimitives.ReadUInt32LittleEndian(metadata.AsSpan((int)offset));
            }
            else if (id == VhdxVirtualDiskSize)
            {
                virtualSize = BinaryPrimitives.ReadUInt64LittleEndian(metadata.AsSpan((int)offset));
            }
            else if (id == VhdxLogicalSectorSize)
            {
                sectorSize = BinaryPrimitives.ReadUInt32LittleEndian(metadata.AsSpan((int)offset));
            }
        }

        if (blockSize == 0 || sectorSize == 0)
        {
            return;
        }

        ulong chunkRatio = (1UL << 23) * sectorSize / blockSize;
        ulong payloadBlocks = (virtualSize + blockSize - 1) / blockSize;
        total = payloadBlocks;
        byte[] bat = Read(batOffset, batLength);
        var owners = new Dictionary<ulong, ulong>();
        ulong payload = 0;
        for (ulong k = 0; (k + 1) * 8 <= (ulong)bat.Length && payload < payloadBlocks; k++)
        {
            // Every (chunkRatio + 1)-th entry is a sector bitmap entry, not a payload block.
            if ((k + 1) % (chunkRatio + 1) == 0)
            {
                continue;
            }

            ulong entry = BinaryPrimitives.ReadUInt64LittleEndian(bat.AsSpan((int)(k * 8)));
            ulong state = entry & 7;
            ulong index = payload++;
            if (state is not (6 or 7))
            {
                continue;
            }

            Claim(owners, batOffset + (k * 8), (entry >> 20) * 1024 * 1024, blockSize, index, "payload block");
        }
    }
}
