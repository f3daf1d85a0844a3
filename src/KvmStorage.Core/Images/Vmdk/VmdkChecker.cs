using System.Buffers.Binary;
using KvmStorage.Core.Images.Check;

namespace KvmStorage.Core.Images.Vmdk;

/// <summary>Hosted sparse extents (monolithicSparse, streamOptimized): grain directory and tables inside the file, no grain used twice.</summary>
internal static class VmdkChecker
{
    public static void Walk(AllocationTableCheck check)
    {
        byte[] h = check.Read(0, Math.Min(512, check.FileLength));
        if (h.Length < 512 || BinaryPrimitives.ReadUInt32BigEndian(h) != VmdkSparseHeader.Magic)
        {
            // A descriptor file: its extents are other files, checked when given themselves.
            return;
        }

        VmdkSparseHeader header = VmdkSparseHeader.Parse(h);
        ulong gdOffset = header.GdOffset;
        if (gdOffset == VmdkSparseHeader.GdAtEnd)
        {
            // streamOptimized writes the real directory offset into the footer's copy of the header.
            gdOffset = VmdkSparseHeader.Parse(check.Read(check.FileLength - 1024, 512)).GdOffset;
        }

        ulong grainSectors = header.GrainSize;
        uint gtesPerGt = header.GtesPerGt;
        if (grainSectors == 0 || gtesPerGt == 0)
        {
            return;
        }

        ulong grains = (header.Capacity + grainSectors - 1) / grainSectors;
        ulong tables = (grains + gtesPerGt - 1) / gtesPerGt;
        check.Total = grains;
        byte[] directory = check.Read(gdOffset * 512, tables * 4);
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
            if (gtOffset > check.FileLength || gtBytes > check.FileLength - gtOffset)
            {
                check.Corruption(gdEntryAt, ImageCorruptionKind.PastEndOfFile, $"grain table {t} at 0x{gtOffset:x} lies past the end of the file.");
                continue;
            }

            if (!tableOwners.TryAdd(gtOffset, t))
            {
                check.Corruption(gdEntryAt, ImageCorruptionKind.ClusterUsedTwice, $"grain table {t} at 0x{gtOffset:x} is also grain table {tableOwners[gtOffset]}.");
                continue;
            }

            byte[] gt = check.Read(gtOffset, gtBytes);
            for (ulong g = 0; g < gtesPerGt && (t * gtesPerGt) + g < grains; g++)
            {
                uint grainSector = BinaryPrimitives.ReadUInt32LittleEndian(gt.AsSpan((int)(g * 4)));

                // 0 is unallocated, 1 reads as zeros.
                if (grainSector <= 1)
                {
                    continue;
                }

                check.Claim(owners, gtOffset + (g * 4), (ulong)grainSector * 512, 512, (t * gtesPerGt) + g, "grain");
            }
        }
    }
}
