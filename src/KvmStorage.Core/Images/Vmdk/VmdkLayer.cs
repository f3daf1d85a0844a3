using System.Buffers;
using System.Buffers.Binary;
using KvmStorage.Core.Images.Block;

namespace KvmStorage.Core.Images.Vmdk;

/// <summary>
/// VMDK (qemu block/vmdk.c): a list of extents, each flat (raw data in a file) or hosted sparse
/// ("KDMV": grain directory, grain tables, optionally zlib-compressed grains with markers).
/// Extent files must lie in the descriptor's folder.
/// </summary>
internal sealed class VmdkLayer : ImageLayer
{
    private readonly VmdkExtent[] extents;

    private VmdkLayer(HostFile file, ulong size, VmdkExtent[] extents)
        : base(file, size)
    {
        this.extents = extents;
    }

    public static VmdkLayer Open(HostFile file, ImageInfo info)
    {
        byte[] magic = file.ReadMetadata(0, 4, "VMDK magic");
        uint value = BinaryPrimitives.ReadUInt32BigEndian(magic);
        if (value == VmdkSparseHeader.Magic)
        {
            var sparse = SparseExtent.Open(file, ownsFile: false, 0, null);
            return new VmdkLayer(file, info.VirtualSize, [sparse]);
        }

        if (value == VmdkSparseHeader.Vmdk3Magic)
        {
            throw BlockErrors.NotSupported(BlockErrorIds.FormatNotReadable, file.Path, "old VMDK3 (COWD) extents cannot be read.");
        }

        byte[] text = file.ReadMetadata(0, (int)Math.Min(file.Length, VmdkDescriptor.MaxDescriptorFile), "VMDK descriptor");
        List<VmdkExtentLine> lines = VmdkDescriptor.ParseExtents(VmdkDescriptor.AsCString(text), out string? invalid)
            ?? throw BlockErrors.Mapping(file.Path, $"invalid extent line: {invalid}");
        string folder = Path.GetDirectoryName(file.Path) ?? "/";
        var extents = new List<VmdkExtent>(lines.Count);
        ulong start = 0;
        try
        {
            foreach (VmdkExtentLine line in lines)
            {
                string extentPath = Path.GetFullPath(line.FileName.StartsWith('/') ? line.FileName : Path.Join(folder, line.FileName));
                if (!VmdkReader.IsInsideFolder(extentPath, folder))
                {
                    throw BlockErrors.Invalid(BlockErrorIds.ExtentOutsideFolder, file.Path, $"the extent '{line.FileName}' lies outside the descriptor's folder.");
                }

                ulong sectors = (ulong)line.Sectors;
                if (sectors > (ulong.MaxValue / 512) - start)
                {
                    throw BlockErrors.Mapping(file.Path, "the extents are too large.");
                }

                HostFile extentFile = HostFile.Open(extentPath);
                try
                {
                    extents.Add(line.IsFlat
                        ? new FlatExtent(extentFile, start, sectors * 512, (ulong)line.FlatOffset * 512)
                        : line.Type is "SPARSE" or "VMFSSPARSE"
                            ? SparseExtent.Open(extentFile, ownsFile: true, start, sectors * 512)
                            : throw BlockErrors.NotSupported(BlockErrorIds.FormatNotReadable, file.Path, $"{line.Type} extents cannot be read."));
                }
                catch
                {
                    extentFile.Dispose();
                    throw;
                }

                start += sectors * 512;
            }
        }
        catch
        {
            foreach (VmdkExtent e in extents)
            {
                e.Dispose();
            }

            throw;
        }

        return new VmdkLayer(file, info.VirtualSize, [.. extents]);
    }

    public override LayerRun Map(ulong offset, ulong maxLength)
    {
        int index = Find(offset);
        if (index < 0)
        {
            return new LayerRun(maxLength, RunKind.Zero);
        }

        VmdkExtent extent = extents[index];
        LayerRun run = extent.Map(offset - extent.Start, Math.Min(maxLength, extent.End - offset));
        return run.Kind is RunKind.Data or RunKind.Special ? new LayerRun(run.Length, RunKind.Special, run.HostOffset, (ulong)index) : run;
    }

    public override bool SupportsBacking => true;

    /// <summary>
    /// qemu's vmdk_co_block_status: a sparse grain's data at its offset in the extent's file (compressed grains at none),
    /// zero grains as zeros, a flat extent all data with the file's holes beneath it.
    /// </summary>
    public override LayerStatus Status(ulong offset, ulong maxLength)
    {
        int index = Find(offset);
        if (index < 0)
        {
            return new LayerStatus(maxLength, Zero: true);
        }

        VmdkExtent extent = extents[index];
        ulong inExtent = offset - extent.Start;
        ulong length = Math.Min(maxLength, extent.End - offset);
        if (extent is FlatExtent flat)
        {
            return new LayerStatus(length, Data: true, OffsetValid: true, Offset: flat.FileOffset + inExtent, Recurse: true, In: flat.File);
        }

        LayerRun run = extent.Map(inExtent, length);
        return run.Kind switch
        {
            RunKind.Data => new LayerStatus(run.Length, Data: true, OffsetValid: true, Offset: run.HostOffset, In: extent.File),
            RunKind.Special => new LayerStatus(run.Length, Data: true),
            RunKind.Zero => new LayerStatus(run.Length, Zero: true),
            _ => new LayerStatus(run.Length),
        };
    }

    public override void ReadRun(ulong offset, in LayerRun run, Span<byte> destination)
    {
        VmdkExtent extent = extents[(int)run.Tag];
        extent.Read(offset - extent.Start, run.HostOffset, destination);
    }

    public override void Dispose()
    {
        foreach (VmdkExtent e in extents)
        {
            e.Dispose();
        }

        base.Dispose();
    }

    private int Find(ulong offset)
    {
        int lo = 0, hi = extents.Length - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) / 2;
            if (offset < extents[mid].Start)
            {
                hi = mid - 1;
            }
            else if (offset >= extents[mid].End)
            {
                lo = mid + 1;
            }
            else
            {
                return mid;
            }
        }

        return -1;
    }

    private abstract class VmdkExtent(HostFile file, bool ownsFile, ulong start, ulong length) : IDisposable
    {
        public HostFile File { get; } = file;

        public ulong Start { get; } = start;

        public ulong End { get; } = start + length;

        /// <summary>Maps an offset relative to the extent; Data runs carry the host offset.</summary>
        public abstract LayerRun Map(ulong offset, ulong maxLength);

        public virtual void Read(ulong offset, ulong hostOffset, Span<byte> destination) => File.ReadData(hostOffset, destination);

        public void Dispose()
        {
            if (ownsFile)
            {
                File.Dispose();
            }
        }
    }

    private sealed class FlatExtent(HostFile file, ulong start, ulong length, ulong fileOffset) : VmdkExtent(file, true, start, length)
    {
        public ulong FileOffset => fileOffset;

        public override LayerRun Map(ulong offset, ulong maxLength)
        {
            (bool data, ulong n) = File.Probe(fileOffset + offset, maxLength);
            return data ? new LayerRun(n, RunKind.Data, fileOffset + offset) : new LayerRun(n, RunKind.Zero);
        }
    }

    private sealed class SparseExtent : VmdkExtent
    {
        private const uint FlagZeroGrain = 1 << 2;
        private const int MaxDirectoryBytes = 16 * 1024 * 1024;
        private const long CacheBudget = 16L * 1024 * 1024;

        private readonly uint[] directory;
        private readonly uint tableEntries;
        private readonly ulong grainSize;
        private readonly bool compressed;
        private readonly bool markers;
        private readonly bool zeroGrain;
        private readonly BoundedCache<uint[]> tables;

        private SparseExtent(HostFile file, bool ownsFile, ulong start, ulong length, VmdkSparseHeader header, uint[] directory)
            : base(file, ownsFile, start, length)
        {
            this.directory = directory;
            tableEntries = header.GtesPerGt;
            grainSize = header.GrainSize * 512;
            compressed = header.CompressAlgorithm == VmdkSparseHeader.CompressDeflate;
            markers = (header.Flags & VmdkSparseHeader.FlagMarkers) != 0;
            zeroGrain = (header.Flags & FlagZeroGrain) != 0;
            tables = new BoundedCache<uint[]>(CacheBudget, header.GtesPerGt * 4L);
        }

        public static SparseExtent Open(HostFile file, bool ownsFile, ulong start, ulong? length)
        {
            byte[] sector = file.ReadMetadata(0, 512, "VMDK sparse header");
            VmdkSparseHeader header = VmdkSparseHeader.Parse(sector);
            if (header.GdOffset == VmdkSparseHeader.GdAtEnd)
            {
                // streamOptimized: the footer near the end of the file holds the real header (marker, header, end-of-stream).
                ulong end = (file.Length + 511) / 512 * 512;
                if (end < 1536)
                {
                    throw BlockErrors.Mapping(file.Path, "the file is too small for a VMDK footer.");
                }

                byte[] footer = file.ReadMetadata(end - 1024, 512, "VMDK footer");
                if (BinaryPrimitives.ReadUInt32BigEndian(footer) != VmdkSparseHeader.Magic)
                {
                    throw BlockErrors.Mapping(file.Path, "the VMDK footer is invalid.");
                }

                header = VmdkSparseHeader.Parse(footer);
            }

            if (header.GrainSize == 0 || header.GrainSize > 0x200000 / 512 * 512 || header.GtesPerGt == 0 || header.GtesPerGt > 512)
            {
                throw BlockErrors.Mapping(file.Path, "the VMDK grain size or grain table size is invalid.");
            }

            ulong capacity = length ?? header.Capacity * 512;
            ulong grainBytes = header.GrainSize * 512;
            ulong tableSpan = grainBytes * header.GtesPerGt;
            ulong directoryEntries = (capacity + tableSpan - 1) / tableSpan;
            if (directoryEntries * 4 > MaxDirectoryBytes || header.GdOffset > ulong.MaxValue / 512)
            {
                throw BlockErrors.Invalid(BlockErrorIds.TableTooLarge, file.Path, $"the VMDK grain directory ({directoryEntries} entries) is too large.");
            }

            byte[] raw = file.ReadMetadata(header.GdOffset * 512, (int)(directoryEntries * 4), "VMDK grain directory");
            uint[] directory = new uint[directoryEntries];
            for (int i = 0; i < directory.Length; i++)
            {
                directory[i] = BinaryPrimitives.ReadUInt32LittleEndian(raw.AsSpan(i * 4));
            }

            return new SparseExtent(file, ownsFile, start, capacity, header, directory);
        }

        public override LayerRun Map(ulong offset, ulong maxLength) =>
            LayerRun.OverBlocks(offset, maxLength, grainSize, (End - Start + grainSize - 1) / grainSize, Classify);

        public override void Read(ulong offset, ulong hostOffset, Span<byte> destination)
        {
            if (!compressed)
            {
                File.ReadData(hostOffset, destination);
                return;
            }

            int inGrain = (int)(offset % grainSize);
            byte[] grain = ArrayPool<byte>.Shared.Rent((int)grainSize);
            try
            {
                Span<byte> output = grain.AsSpan(0, (int)grainSize);
                int produced = DecompressGrain(hostOffset, output);

                // A short last grain reads as zeros after its end.
                output[produced..].Clear();
                output.Slice(inGrain, destination.Length).CopyTo(destination);
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(grain);
            }
        }

        private int DecompressGrain(ulong hostOffset, Span<byte> output)
        {
            ulong dataOffset = hostOffset;
            int size;
            if (markers)
            {
                // Grain marker: u64 LBA, u32 compressed size, then the data.
                byte[] marker = File.ReadMetadata(hostOffset, 12, "VMDK grain marker");
                uint declared = BinaryPrimitives.ReadUInt32LittleEndian(marker.AsSpan(8));
                if (declared == 0 || declared > (grainSize * 2) + 4096)
                {
                    throw BlockErrors.Invalid(BlockErrorIds.InvalidCompressedData, File.Path, $"the grain at 0x{hostOffset:x} declares an impossible size ({declared} bytes).");
                }

                dataOffset += 12;
                size = (int)declared;
            }
            else
            {
                size = (int)((grainSize * 2) + 4096);
            }

            if (dataOffset >= File.Length)
            {
                throw BlockErrors.Mapping(File.Path, $"the grain at 0x{hostOffset:x} lies beyond the end of the file.");
            }

            size = (int)Math.Min((ulong)size, File.Length - dataOffset);
            byte[] input = ArrayPool<byte>.Shared.Rent(size);
            try
            {
                File.ReadData(dataOffset, input.AsSpan(0, size));
                return Decompression.Decompress(Decompression.Method.Zlib, input, size, output, File.Path);
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(input);
            }
        }

        // get_cluster_offset: no table or entry 0 is unallocated; entry 1 with the zero-grain flag reads as zeros.
        private (RunKind Kind, ulong Host) Classify(ulong grain)
        {
            ulong tableIndex = grain / tableEntries;
            if (tableIndex >= (ulong)directory.Length || directory[tableIndex] == 0)
            {
                return (RunKind.Unallocated, 0);
            }

            uint[] table = tables.GetOrLoad(directory[tableIndex], LoadTable);
            uint entry = table[grain % tableEntries];
            if (entry == 0)
            {
                return (RunKind.Unallocated, 0);
            }

            if (entry == 1 && zeroGrain)
            {
                return (RunKind.Zero, 0);
            }

            return (compressed ? RunKind.Special : RunKind.Data, (ulong)entry * 512);
        }

        private uint[] LoadTable(ulong sector)
        {
            byte[] raw = File.ReadMetadata(sector * 512, (int)(tableEntries * 4), "VMDK grain table");
            uint[] table = new uint[tableEntries];
            for (int i = 0; i < table.Length; i++)
            {
                table[i] = BinaryPrimitives.ReadUInt32LittleEndian(raw.AsSpan(i * 4));
            }

            return table;
        }
    }
}
