using System.Text;
using KvmStorage.Core.Errors;

namespace KvmStorage.Core.Domains;

/// <summary>
/// Disk target names (<c>vda</c>, <c>sdaa</c>, …) as libvirt's <c>virDiskNameParse</c> reads them: a known prefix,
/// then lowercase letters forming a bijective base-26 index (a = 0 … z = 25, aa = 26, …, zz = 701, aaa = 702).
/// </summary>
public static class DiskTargetNames
{
    // virDiskNameParse tries the prefixes in this order; "xvd" cannot be mistaken for "vd" because matching is by prefix.
    private static readonly string[] Prefixes = ["fd", "hd", "vd", "sd", "xvd", "ubd"];

    /// <summary>The known target prefixes: fd, hd, vd, sd, xvd, ubd.</summary>
    public static IReadOnlyList<string> KnownPrefixes => Prefixes;

    /// <summary>The letters for an index: 0 → a, 25 → z, 26 → aa, 701 → zz, 702 → aaa.</summary>
    public static string FormatIndex(int index)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        var letters = new StringBuilder();
        long n = index;
        while (n >= 0)
        {
            letters.Insert(0, (char)('a' + (n % 26)));
            n = (n / 26) - 1;
        }

        return letters.ToString();
    }

    /// <summary>A target name from a prefix and an index, e.g. (vd, 27) → vdab.</summary>
    public static string Format(string prefix, int index) => prefix + FormatIndex(index);

    /// <summary>Reads the index of a letters-only suffix; false for an empty, non-lowercase or overflowing suffix.</summary>
    public static bool TryParseIndex(string letters, out int index)
    {
        index = -1;
        if (string.IsNullOrEmpty(letters))
        {
            return false;
        }

        long value = 0;
        for (int i = 0; i < letters.Length; i++)
        {
            char c = letters[i];
            if (c < 'a' || c > 'z')
            {
                return false;
            }

            value = ((value + (i == 0 ? 0 : 1)) * 26) + (c - 'a');
            if (value > int.MaxValue)
            {
                return false;
            }
        }

        index = (int)value;
        return true;
    }

    /// <summary>Splits a valid target into prefix and index; false when libvirt would reject it as a disk target.</summary>
    public static bool TryParse(string? target, out string prefix, out int index)
    {
        prefix = string.Empty;
        index = -1;
        if (target is null)
        {
            return false;
        }

        foreach (string candidate in Prefixes)
        {
            if (target.StartsWith(candidate, StringComparison.Ordinal))
            {
                if (TryParseIndex(target[candidate.Length..], out index))
                {
                    prefix = candidate;
                    return true;
                }

                return false;
            }
        }

        return false;
    }

    public static bool IsValid(string? target) => TryParse(target, out _, out _);

    /// <summary>
    /// Throws <see cref="DomainErrorIds.InvalidDiskTarget"/> unless the target is a prefix plus lowercase letters.
    /// Partition digits (<c>vdb1</c>) parse in libvirt but the qemu driver refuses them for disks, so they are refused here.
    /// </summary>
    public static void Validate(string? target)
    {
        if (!IsValid(target))
        {
            throw new KvmStorageException(
                ErrorKind.InvalidArgument,
                DomainErrorIds.InvalidDiskTarget,
                $"'{target}' is not a valid disk target: use fd, hd, vd, sd, xvd or ubd followed by lowercase letters only (for example vdb).",
                target);
        }
    }

    /// <summary>The target prefix for a bus: virtio → vd; scsi, sata, usb → sd; ide → hd; fdc → fd; xen → xvd; uml → ubd.</summary>
    public static string PrefixForBus(string bus) => bus switch
    {
        "virtio" => "vd",
        "scsi" or "sata" or "usb" => "sd",
        "ide" => "hd",
        "fdc" => "fd",
        "xen" => "xvd",
        "uml" => "ubd",
        _ => throw new KvmStorageException(ErrorKind.InvalidArgument, DomainErrorIds.UnsupportedDiskBus, $"The disk bus '{bus}' is not supported; use virtio, scsi, sata, usb, ide or fdc.", bus),
    };

    /// <summary>
    /// The first target for <paramref name="bus"/> whose index is not used, gaps included. Names are compared whatever
    /// their bus, so scsi, sata and usb disks share the sd* names, as they do in libvirt. Names only: a new disk's
    /// target is chosen by <see cref="DiskTargetPlanner.Choose"/>, which also keeps its drive address free.
    /// </summary>
    public static string NextFree(string bus, IEnumerable<string> usedTargets)
    {
        ArgumentNullException.ThrowIfNull(usedTargets);
        string prefix = PrefixForBus(bus);
        var used = new HashSet<int>();
        foreach (string target in usedTargets)
        {
            if (TryParse(target, out string usedPrefix, out int index) && usedPrefix == prefix)
            {
                used.Add(index);
            }
        }

        int next = 0;
        while (used.Contains(next))
        {
            next++;
        }

        return Format(prefix, next);
    }
}
