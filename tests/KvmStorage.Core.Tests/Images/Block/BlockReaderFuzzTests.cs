using System.Buffers.Binary;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Images.Block;
using KvmStorage.Core.Tests.Support;
using Xunit;
using static KvmStorage.Core.Tests.Images.Block.BlockTestImages;

namespace KvmStorage.Core.Tests.Images.Block;

/// <summary>Corrupted mapping tables end in a typed error or in a successful read, never in another exception or a hang.</summary>
public sealed class BlockReaderFuzzTests : IDisposable
{
    private const int Size = 8 * 1024 * 1024;
    private readonly TempDirectory dir = new();

    public static TheoryData<string, string[]> Formats => new()
    {
        { "qcow2", [] },
        { "qcow2", ["-c"] },
        { "qcow2", ["-c", "-o", "compression_type=zstd"] },
        { "qcow2", ["-o", "extended_l2=on"] },
        { "vmdk", ["-o", "subformat=monolithicSparse"] },
        { "vmdk", ["-o", "subformat=streamOptimized"] },
        { "vdi", [] },
        { "vpc", [] },
        { "vhdx", [] },
    };

    public void Dispose() => dir.Dispose();

    [SkippableTheory]
    [MemberData(nameof(Formats))]
    public void Corrupted_tables_give_typed_errors_or_reads(string format, string[] options)
    {
        string source = dir.Combine("fuzz-source.raw");
        WriteSource(source);
        string valid = dir.Combine($"valid.{format}");
        Qemu("qemu-img", ["convert", "-f", "raw", "-O", format, .. options, source, valid]);
        byte[] original = File.ReadAllBytes(valid);
        var random = new Random(format.GetHashCode(StringComparison.Ordinal) ^ options.Length);
        List<(int Offset, int Length)> targets = format == "qcow2" ? Qcow2Tables(original) : GenericTables(original);
        Assert.NotEmpty(targets);

        string corrupt = dir.Combine($"corrupt.{format}");
        for (int round = 0; round < 20; round++)
        {
            byte[] bytes = (byte[])original.Clone();
            int hits = random.Next(1, 6);
            for (int i = 0; i < hits; i++)
            {
                (int start, int length) = targets[random.Next(targets.Count)];
                int word = format == "qcow2" ? 8 : 4;
                int at = start + (random.Next(Math.Max(1, length / word)) * word);
                Corrupt(bytes.AsSpan(at, Math.Min(word, bytes.Length - at)), random);
            }

            File.WriteAllBytes(corrupt, bytes);
            var run = Task.Run(() => ReadEverything(corrupt, format));
            Assert.True(run.Wait(TimeSpan.FromSeconds(60)), $"round {round} did not finish");
            Exception? failure = run.Result;
            Assert.True(failure is null or KvmStorageException, $"round {round}: {failure}");
        }
    }

    private static Exception? ReadEverything(string path, string format)
    {
        try
        {
            using IBlockReader reader = BlockReaders.Open(path, new BlockOpenOptions { ForceShare = true, Format = Enum.Parse<KvmStorage.Core.Images.ImageFormat>(format, ignoreCase: true) });
            _ = reader.GetExtents(0, reader.Size).Count();
            byte[] buffer = new byte[1024 * 1024];
            for (ulong offset = 0; offset < reader.Size; offset += (ulong)buffer.Length)
            {
                reader.Read(offset, buffer.AsSpan(0, (int)Math.Min((ulong)buffer.Length, reader.Size - offset)));
            }

            return null;
        }
        catch (Exception e)
        {
            return e;
        }
    }

    private static void Corrupt(Span<byte> word, Random random)
    {
        switch (random.Next(4))
        {
            case 0:
                random.NextBytes(word);
                break;
            case 1:
                // A plausible but wrong offset: far beyond the end of the file.
                word.Clear();
                word[random.Next(word.Length)] = (byte)random.Next(1, 256);
                break;
            case 2:
                word[random.Next(word.Length)] ^= (byte)(1 << random.Next(8));
                break;
            default:
                word.Fill(0xFF);
                break;
        }
    }

    /// <summary>The L1 table and every L2 table of a qcow2 image.</summary>
    private static List<(int, int)> Qcow2Tables(byte[] image)
    {
        int clusterSize = 1 << (int)BinaryPrimitives.ReadUInt32BigEndian(image.AsSpan(20));
        int l1Size = (int)BinaryPrimitives.ReadUInt32BigEndian(image.AsSpan(36));
        int l1Offset = (int)BinaryPrimitives.ReadUInt64BigEndian(image.AsSpan(40));
        var tables = new List<(int, int)> { (l1Offset, l1Size * 8) };
        for (int i = 0; i < l1Size; i++)
        {
            ulong l2 = BinaryPrimitives.ReadUInt64BigEndian(image.AsSpan(l1Offset + (i * 8))) & 0x00FF_FFFF_FFFF_FE00;
            if (l2 != 0)
            {
                tables.Add(((int)l2, clusterSize));
            }
        }

        return tables;
    }

    /// <summary>Where the other formats keep their maps: after the header, and at the end (streamOptimized, VHD footer).</summary>
    private static List<(int, int)> GenericTables(byte[] image) =>
    [
        (512, Math.Min(image.Length - 512, 4 * 1024 * 1024)),
        (Math.Max(0, image.Length - 65536), Math.Min(image.Length, 65536)),
    ];

    private static void WriteSource(string path)
    {
        var random = new Random(7);
        byte[] data = new byte[Size];
        random.NextBytes(data);

        // Compressible stretches, so compressed formats store some grains compressed and others zero.
        data.AsSpan(1_000_000, 1_500_000).Fill(0x41);
        data.AsSpan(4_000_000, 2_000_000).Clear();
        File.WriteAllBytes(path, data);
    }
}
