using System.Text.Json;
using KvmStorage.Core.Images.Block;
using KvmStorage.Core.Tests.Support;
using Xunit;

namespace KvmStorage.Core.Tests.Images.Block;

/// <summary>
/// A 64 MiB raw source (random data, written zeros and holes at unaligned places) and helpers that turn it into
/// images with qemu-img/qemu-io and compare what the block readers see with what qemu sees.
/// </summary>
public sealed class BlockTestImages : IDisposable
{
    public const ulong SourceSize = 64UL * 1024 * 1024;

    private readonly TempDirectory dir = new();

    public BlockTestImages()
    {
        Source = dir.Combine("source.raw");
        var random = new Random(20240611);
        using FileStream stream = new(Source, FileMode.CreateNew, FileAccess.Write);
        stream.SetLength((long)SourceSize);
        long offset = random.Next(0, 300_000);
        byte[] chunk = new byte[3 * 1024 * 1024];
        int kind = 0;
        while (offset < (long)SourceSize)
        {
            int length = (int)Math.Min(random.Next(1, chunk.Length), (long)SourceSize - offset);
            switch (kind++ % 3)
            {
                case 0:
                    random.NextBytes(chunk.AsSpan(0, length));
                    stream.Position = offset;
                    stream.Write(chunk, 0, length);
                    break;
                case 1:
                    Array.Clear(chunk);
                    stream.Position = offset;
                    stream.Write(chunk, 0, length);
                    break;
                default:
                    // A hole: nothing written.
                    break;
            }

            offset += length;
        }
    }

    /// <summary>The raw source of every image.</summary>
    public string Source { get; }

    public string PathOf(string name) => dir.Combine(name);

    public void Dispose() => dir.Dispose();

    public static void Qemu(string tool, params string[] arguments) => ExternalTool.RunChecked(tool, arguments);

    /// <summary>What <c>qemu-img convert -O raw</c> makes of the image.</summary>
    public static byte[] QemuContent(string image, string? format = null)
    {
        string output = image + ".qemu.raw";
        Qemu("qemu-img", ["convert", "-U", .. FormatArgs(format), "-O", "raw", image, output]);
        try
        {
            return File.ReadAllBytes(output);
        }
        finally
        {
            File.Delete(output);
        }
    }

    /// <summary><c>qemu-img map --output=json</c> as (start, length, data, zero).</summary>
    public static List<(ulong Start, ulong Length, bool Data, bool Zero)> QemuMap(string image, string? format = null)
    {
        string json = ExternalTool.RunChecked("qemu-img", ["map", "-U", .. FormatArgs(format), "--output=json", image]);
        using JsonDocument doc = JsonDocument.Parse(json);
        var result = new List<(ulong, ulong, bool, bool)>();
        foreach (JsonElement e in doc.RootElement.EnumerateArray())
        {
            result.Add((e.GetProperty("start").GetUInt64(), e.GetProperty("length").GetUInt64(), e.GetProperty("data").GetBoolean(), e.GetProperty("zero").GetBoolean()));
        }

        return result;
    }

    /// <summary>
    /// Reads the whole image through the block reader and compares it with qemu's conversion, byte for byte;
    /// then checks the extents against <c>qemu-img map</c> and that the Data extents alone rebuild the content.
    /// </summary>
    public static void AssertMatchesQemu(string image, string? format = null, bool compareMap = true)
    {
        byte[] expected = QemuContent(image, format);
        using IBlockReader reader = BlockReaders.Open(image);
        Assert.Equal((ulong)expected.Length, reader.Size);

        byte[] ours = new byte[expected.Length];
        const int Chunk = 1024 * 1024 + 4096 + 512;
        for (int done = 0; done < ours.Length; done += Chunk)
        {
            reader.Read((ulong)done, ours.AsSpan(done, Math.Min(Chunk, ours.Length - done)));
        }

        AssertSame(expected, ours, "full read");

        List<Extent> extents = [.. reader.GetExtents(0, reader.Size)];
        ulong next = 0;
        byte[] rebuilt = new byte[expected.Length];
        foreach (Extent e in extents)
        {
            Assert.Equal(next, e.Offset);
            Assert.True(e.Length > 0);
            next = e.End;
            if (e.Kind == ExtentKind.Data)
            {
                reader.Read(e.Offset, rebuilt.AsSpan((int)e.Offset, (int)e.Length));
            }
        }

        Assert.Equal(reader.Size, next);
        AssertSame(expected, rebuilt, "data extents only");

        if (compareMap)
        {
            AssertExtentsAgree(QemuMap(image, format), extents, reader.Size);
        }
    }

    /// <summary>
    /// On a 4 KiB grid: where qemu reports plain data, ours is Data; where qemu reports no data, ours is not.
    /// Granules qemu splits, or reports as data that reads as zeros, are left out (qemu merges differently).
    /// </summary>
    public static void AssertExtentsAgree(List<(ulong Start, ulong Length, bool Data, bool Zero)> qemu, List<Extent> ours, ulong size)
    {
        const ulong Granule = 4096;
        int granules = (int)((size + Granule - 1) / Granule);
        sbyte[] theirs = Classify(granules, Granule, qemu.Select(q => (q.Start, q.Length, q.Data && !q.Zero ? (sbyte)1 : !q.Data ? (sbyte)0 : (sbyte)-1)));
        sbyte[] mine = Classify(granules, Granule, ours.Select(e => (e.Offset, e.Length, e.Kind == ExtentKind.Data ? (sbyte)1 : (sbyte)0)));
        int compared = 0;
        for (int g = 0; g < granules; g++)
        {
            if (theirs[g] is 0 or 1)
            {
                compared++;
                Assert.True(theirs[g] == mine[g], $"granule at {(ulong)g * Granule}: qemu says {(theirs[g] == 1 ? "data" : "no data")}, ours {(mine[g] == 1 ? "data" : mine[g] == 0 ? "no data" : "mixed")}");
            }
        }

        // Flat formats leave many granules out: qemu reports their holes as data that reads as zeros.
        Assert.True(compared > 0, "no granule could be compared");
    }

    private static string[] FormatArgs(string? format) => format is null ? [] : ["-f", format];

    // -2 unset, -1 mixed, else the value.
    private static sbyte[] Classify(int granules, ulong granule, IEnumerable<(ulong Start, ulong Length, sbyte Value)> ranges)
    {
        sbyte[] result = new sbyte[granules];
        Array.Fill(result, (sbyte)-2);
        foreach ((ulong start, ulong length, sbyte value) in ranges)
        {
            if (length == 0)
            {
                continue;
            }

            int first = (int)(start / granule);
            int last = (int)Math.Min((ulong)granules - 1, (start + length - 1) / granule);
            for (int g = first; g <= last; g++)
            {
                result[g] = result[g] == -2 || result[g] == value ? value : (sbyte)-1;
            }
        }

        return result;
    }

    public static void AssertSame(byte[] expected, byte[] actual, string what)
    {
        int mismatch = expected.AsSpan().CommonPrefixLength(actual);
        Assert.True(mismatch == expected.Length && expected.Length == actual.Length, $"{what}: first difference at byte {mismatch} (0x{mismatch:x})");
    }
}
