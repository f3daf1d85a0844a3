using System.Globalization;
using System.Text;

namespace KvmStorage.Core.Images.Vmdk;

/// <summary>One extent line of a descriptor: <c>RW &lt;sectors&gt; FLAT|SPARSE|VMFS|VMFSSPARSE|SESPARSE "file" [offset]</c>.</summary>
internal sealed record VmdkExtentLine(long Sectors, string Type, string FileName, long FlatOffset)
{
    public bool IsFlat => Type is "FLAT" or "VMFS";
}

/// <summary>
/// Reads the text descriptor the way qemu's vmdk driver does (block/vmdk.c): keys are found by
/// substring search and extent lines by a scanf-like pattern, so that the values agree with
/// <c>qemu-img info</c> even on oddly formatted files.
/// </summary>
internal static class VmdkDescriptor
{
    /// <summary>qemu reads at most this much of the descriptor for CID and parentFileNameHint (DESC_SIZE).</summary>
    public const int CidWindow = 20 * 512;

    /// <summary>qemu's cap on a descriptor file (1 MiB − 1).</summary>
    public const int MaxDescriptorFile = (1 << 20) - 1;

    public const int MaxExtents = 16384;

    public static readonly string[] SupportedDescriptorCreateTypes =
        ["monolithicFlat", "vmfs", "vmfsSparse", "seSparse", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat"];

    /// <summary>The text up to the first NUL, as a C string (Latin-1 keeps one char per byte).</summary>
    public static string AsCString(ReadOnlySpan<byte> bytes)
    {
        int end = bytes.IndexOf((byte)0);
        return Encoding.Latin1.GetString(end < 0 ? bytes : bytes[..end]);
    }

    /// <summary>vmdk_probe: after comments and blank lines, the first line must be <c>version=1|2|3</c>.</summary>
    public static bool LooksLikeDescriptor(ReadOnlySpan<byte> buf)
    {
        int p = 0;
        int end = buf.Length;
        while (p < end)
        {
            if (buf[p] == '#')
            {
                while (p < end && buf[p] != '\n')
                {
                    p++;
                }

                p++;
                continue;
            }

            if (buf[p] == ' ')
            {
                while (p < end && buf[p] == ' ')
                {
                    p++;
                }

                if (p < end && buf[p] == '\r')
                {
                    p++;
                }

                if (p == end || buf[p] != '\n')
                {
                    return false;
                }

                p++;
                continue;
            }

            ReadOnlySpan<byte> rest = buf[p..];
            foreach (char v in "123")
            {
                if (rest.StartsWith(Encoding.ASCII.GetBytes($"version={v}\n")) || rest.StartsWith(Encoding.ASCII.GetBytes($"version={v}\r\n")))
                {
                    return true;
                }
            }

            return false;
        }

        return false;
    }

    /// <summary>vmdk_parse_description: the text between <c>name="</c> and the next quote.</summary>
    public static string? QuotedValue(string desc, string name, int maxLength)
    {
        int at = desc.IndexOf(name, StringComparison.Ordinal);
        if (at < 0)
        {
            return null;
        }

        int start = at + name.Length + 2;
        if (start >= desc.Length)
        {
            return null;
        }

        int end = desc.IndexOf('"', start);
        if (end < 0 || end - start + 1 > maxLength)
        {
            return null;
        }

        return desc[start..end];
    }

    /// <summary>vmdk_read_cid: the hex number after <c>CID=</c> (or <c>parentCID=</c>) at its first occurrence.</summary>
    public static uint? ReadCid(string desc, string key)
    {
        int at = desc.IndexOf(key, StringComparison.Ordinal);
        if (at < 0)
        {
            return null;
        }

        int p = at + key.Length + 1;
        if (p > desc.Length)
        {
            return null;
        }

        var scanner = new Scanner(desc, p);
        return scanner.Hex();
    }

    /// <summary>vmdk_parse_extents. Returns null with <paramref name="invalidLine"/> set when a line is malformed.</summary>
    /// <remarks>
    /// qemu scans each line with sscanf, whose first <c>%s</c> skips every kind of whitespace, newlines included: a
    /// blank line is read as the next line that has text (so qemu counts an extent once more for each blank line
    /// before it, and so does this port). Scanning from every blank line again would cost the square of the number of
    /// blank lines; the scan depends only on where the text starts, so blank lines in a row share one scan.
    /// </remarks>
    public static List<VmdkExtentLine>? ParseExtents(string desc, out string? invalidLine)
    {
        invalidLine = null;
        var extents = new List<VmdkExtentLine>();
        int p = 0;
        int textStart = -1;
        ExtentScan scan = default;
        while (p < desc.Length)
        {
            int lineEnd = desc.IndexOf('\n', p);
            int next = lineEnd < 0 ? desc.Length : lineEnd + 1;
            if (textStart < p)
            {
                // Past the text the previous scan started at: find where this line's scan starts. Otherwise this
                // line lies in the run of whitespace before that text, and its scan is the previous one.
                textStart = p;
                while (textStart < desc.Length && Scanner.IsSpace(desc[textStart]))
                {
                    textStart++;
                }

                scan = ScanExtentLine(desc, textStart);
            }

            (int matches, string? access, long sectors, string? type, string? name, long flatOffset) = scan;
            if (matches < 4 || access != "RW")
            {
                p = next;
                continue;
            }

            bool valid = type switch
            {
                "FLAT" => matches == 5 && flatOffset >= 0,
                "VMFS" => matches == 4,
                _ => matches == 4,
            };
            if (!valid)
            {
                invalidLine = desc[p..(lineEnd < 0 ? desc.Length : lineEnd)];
                return null;
            }

            if (type == "VMFS")
            {
                flatOffset = 0;
            }

            if (sectors > 0 && type is "FLAT" or "SPARSE" or "VMFS" or "VMFSSPARSE" or "SESPARSE")
            {
                if (extents.Count >= MaxExtents)
                {
                    invalidLine = $"more than {MaxExtents} extents";
                    return null;
                }

                extents.Add(new VmdkExtentLine(sectors, type!, name!, flatOffset));
            }

            p = next;
        }

        return extents;
    }

    private readonly record struct ExtentScan(int Matches, string? Access, long Sectors, string? Type, string? Name, long FlatOffset);

    /// <summary>One sscanf of an extent line: <c>%10s %lld %10s "%511[^\n\r"]" %lld</c>, from <paramref name="start"/>.</summary>
    private static ExtentScan ScanExtentLine(string desc, int start)
    {
        var s = new Scanner(desc, start);
        int matches = 0;
        long sectors = 0;
        string? type = null;
        string? name = null;
        long flatOffset = -1;
        string? access = s.Word(10);
        if (access is not null)
        {
            matches++;
            long? n = s.Decimal();
            if (n is not null)
            {
                sectors = n.Value;
                matches++;
                type = s.Word(10);
                if (type is not null)
                {
                    matches++;
                    name = s.QuotedName(511);
                    if (name is not null)
                    {
                        matches++;
                        long? offset = s.Decimal();
                        if (offset is not null)
                        {
                            flatOffset = offset.Value;
                            matches++;
                        }
                    }
                }
            }
        }

        return new ExtentScan(matches, access, sectors, type, name, flatOffset);
    }

    /// <summary>Just enough of sscanf to read descriptor lines exactly as glibc would.</summary>
    private ref struct Scanner
    {
        private readonly string text;
        private int p;

        public Scanner(string text, int position)
        {
            this.text = text;
            p = position;
        }

        private void SkipSpace()
        {
            while (p < text.Length && IsSpace(text[p]))
            {
                p++;
            }
        }

        public static bool IsSpace(char c) => c is ' ' or '\t' or '\n' or '\r' or '\v' or '\f';

        /// <summary><c>%Ns</c>.</summary>
        public string? Word(int width)
        {
            SkipSpace();
            int start = p;
            while (p < text.Length && !IsSpace(text[p]) && p - start < width)
            {
                p++;
            }

            return p == start ? null : text[start..p];
        }

        /// <summary><c>%ld</c> (strtol saturates on overflow).</summary>
        public long? Decimal()
        {
            SkipSpace();
            int start = p;
            bool negative = false;
            if (p < text.Length && text[p] is '+' or '-')
            {
                negative = text[p] == '-';
                p++;
            }

            int digits = p;
            decimal value = 0;
            while (p < text.Length && char.IsAsciiDigit(text[p]))
            {
                if (value <= long.MaxValue)
                {
                    value = (value * 10) + (text[p] - '0');
                }

                p++;
            }

            if (p == digits)
            {
                p = start;
                return null;
            }

            if (negative)
            {
                return -value < long.MinValue ? long.MinValue : (long)-value;
            }

            return value > long.MaxValue ? long.MaxValue : (long)value;
        }

        /// <summary><c>%x</c> into a 32-bit variable.</summary>
        public uint? Hex()
        {
            SkipSpace();
            bool negative = false;
            if (p < text.Length && text[p] is '+' or '-')
            {
                negative = text[p] == '-';
                p++;
            }

            if (p + 1 < text.Length && text[p] == '0' && text[p + 1] is 'x' or 'X' && p + 2 < text.Length && char.IsAsciiHexDigit(text[p + 2]))
            {
                p += 2;
            }

            int digits = p;
            ulong value = 0;
            bool saturated = false;
            while (p < text.Length && char.IsAsciiHexDigit(text[p]))
            {
                int d = int.Parse(text.AsSpan(p, 1), NumberStyles.HexNumber, CultureInfo.InvariantCulture);
                if (value > (ulong.MaxValue >> 4))
                {
                    saturated = true;
                }
                else
                {
                    value = (value << 4) | (uint)d;
                }

                p++;
            }

            if (p == digits)
            {
                return null;
            }

            if (saturated)
            {
                value = ulong.MaxValue;
            }

            return negative ? (uint)(0 - value) : (uint)value;
        }

        /// <summary><c> "%N[^\n\r"]"</c>.</summary>
        public string? QuotedName(int width)
        {
            SkipSpace();
            if (p >= text.Length || text[p] != '"')
            {
                return null;
            }

            p++;
            int start = p;
            while (p < text.Length && text[p] is not ('\n' or '\r' or '"') && p - start < width)
            {
                p++;
            }

            if (p == start)
            {
                return null;
            }

            string name = text[start..p];
            // The closing quote is a literal after the conversion: its absence ends the match count here.
            if (p < text.Length && text[p] == '"')
            {
                p++;
            }
            else
            {
                p = text.Length;
            }

            return name;
        }
    }
}
