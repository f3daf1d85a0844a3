using System.Buffers.Binary;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Images.Block;

namespace KvmStorage.Core.Images;

/// <summary>
/// What Hyper-V's Get-VHD reports beyond the header, for any format: the smallest size the disk can shrink to without
/// cutting a partition (<see cref="MinimumSize"/>), and how scattered the image's own blocks are in its file
/// (<see cref="FragmentationPercentage"/>, counted as <c>qemu-img check</c> counts fragmented clusters).
/// </summary>
public sealed record ImageLayoutReport
{
    /// <summary>
    /// Where the guest's last partition ends (GPT: plus the backup table the end of the disk must hold), in bytes; null
    /// when the disk has no partition table the module reads (none, or an encrypted image).
    /// </summary>
    public ulong? MinimumSize { get; init; }

    /// <summary>
    /// Of the image's own allocated clusters or blocks, the percentage that do not follow the previous one in the file
    /// (qemu-img check's "fragmented"); 0 for formats that keep the guest in place (raw, fixed); null when unknown.
    /// </summary>
    public double? FragmentationPercentage { get; init; }

    /// <summary>
    /// Reads both figures of an inspected image (its chain as the inspection read it, through the host's backing-file
    /// rule; nothing is inspected again); what cannot be read stays null: the minimum size of an encrypted image or of
    /// a chain that is not whole, either figure of an image the block layer cannot read.
    /// </summary>
    public static ImageLayoutReport Read(ImageInfo info)
    {
        ArgumentNullException.ThrowIfNull(info);
        if (info.Encryption is not null)
        {
            return new ImageLayoutReport { FragmentationPercentage = info.DiskType == DiskType.Fixed ? 0 : null };
        }

        try
        {
            using ChainedBlockReader reader = BlockReaders.OpenInspected(info);
            return new ImageLayoutReport
            {
                MinimumSize = PartitionEnd(reader),
                FragmentationPercentage = info.DiskType == DiskType.Fixed || info.ClusterSize is null ? 0 : Fragmentation(reader, info.ClusterSize.Value),
            };
        }
        catch (Exception e) when (e is KvmStorageException or IOException)
        {
            return new ImageLayoutReport();
        }
    }

    /// <summary>The end of the last partition of an MBR or GPT disk (sectors of 512 bytes, or 4 KiB for a 4Kn GPT).</summary>
    internal static ulong? PartitionEnd(IBlockReader disk)
    {
        if (disk.Size < 1024)
        {
            return null;
        }

        byte[] mbr = new byte[512];
        disk.Read(0, mbr);
        if (mbr[510] != 0x55 || mbr[511] != 0xAA)
        {
            return null;
        }

        ulong end = 0;
        bool protective = false;
        for (int i = 0; i < 4; i++)
        {
            ReadOnlySpan<byte> entry = mbr.AsSpan(446 + (i * 16), 16);
            byte type = entry[4];
            ulong first = BinaryPrimitives.ReadUInt32LittleEndian(entry[8..]);
            ulong count = BinaryPrimitives.ReadUInt32LittleEndian(entry[12..]);
            if (type == 0 || count == 0)
            {
                continue;
            }

            protective |= type == 0xEE;
            end = Math.Max(end, (first + count) * 512);
        }

        if (protective)
        {
            return GptEnd(disk, 512) ?? GptEnd(disk, 4096);
        }

        return end == 0 ? null : end;
    }

    /// <summary>A GPT's last used LBA plus the backup partition array and header that follow it at the end of the disk.</summary>
    private static ulong? GptEnd(IBlockReader disk, ulong sector)
    {
        if (disk.Size < 2 * sector)
        {
            return null;
        }

        byte[] header = new byte[92];
        disk.Read(sector, header);
        if (!header.AsSpan().StartsWith("EFI PART"u8))
        {
            return null;
        }

        ulong entriesLba = BinaryPrimitives.ReadUInt64LittleEndian(header.AsSpan(72));
        uint count = BinaryPrimitives.ReadUInt32LittleEndian(header.AsSpan(80));
        uint size = BinaryPrimitives.ReadUInt32LittleEndian(header.AsSpan(84));
        ulong arrayBytes = (ulong)count * size;
        if (size < 128 || count == 0 || arrayBytes > 1024 * 1024 || entriesLba > disk.Size / sector || (entriesLba * sector) + arrayBytes > disk.Size)
        {
            return null;
        }

        byte[] entries = new byte[arrayBytes];
        disk.Read(entriesLba * sector, entries);
        ulong last = 0;
        bool any = false;
        for (uint i = 0; i < count; i++)
        {
            ReadOnlySpan<byte> entry = entries.AsSpan((int)(i * size), (int)size);
            if (!entry[..16].ContainsAnyExcept((byte)0))
            {
                continue;
            }

            any = true;
            last = Math.Max(last, BinaryPrimitives.ReadUInt64LittleEndian(entry[40..]));
        }

        // The backup partition array and header live in the last sectors: a smaller disk must still hold them.
        ulong backup = ((arrayBytes + sector - 1) / sector) + 1;
        return any ? (last + 1 + backup) * sector : null;
    }

    /// <summary>
    /// qemu-img check's fragmentation count over the image's own layer, in guest order: every cluster (or block) with
    /// data counts as allocated, and as fragmented when it does not start where the previous one ended in the file;
    /// compressed clusters are always fragmented.
    /// </summary>
    internal static double Fragmentation(ChainedBlockReader reader, uint unit)
    {
        ImageLayer layer = reader.Layer(0);
        ulong allocated = 0, fragmented = 0, next = 0;
        for (ulong offset = 0; offset < layer.Size;)
        {
            LayerRun run = layer.Map(offset, layer.Size - offset);
            ulong length = run.Length;
            ulong? host = run.Kind == RunKind.Data ? run.HostOffset : null;
            bool counted = run.Kind == RunKind.Data;
            if (run.Kind is RunKind.Special or RunKind.Zero)
            {
                // The block status knows more: an uncompressed vmdk grain's offset, a qcow2 zero cluster that keeps its place.
                LayerStatus status = layer.Status(offset, run.Length);
                length = Math.Min(length, status.Length);
                counted = run.Kind == RunKind.Special || status.OffsetValid;
                host = status.OffsetValid ? status.Offset : null;
            }

            if (counted)
            {
                ulong inUnit = offset % unit;
                ulong units = Math.Max(1, (length + inUnit + unit - 1) / unit);
                allocated += units;
                if (host is not { } at)
                {
                    // Compressed clusters are fragmented by nature (qemu-img check counts each one).
                    fragmented += units;
                }
                else
                {
                    if (next != 0 && at - inUnit != next)
                    {
                        fragmented++;
                    }

                    next = at + length;
                }
            }

            offset += length;
        }

        return allocated == 0 ? 0 : Math.Round(100.0 * fragmented / allocated, 2);
    }
}
