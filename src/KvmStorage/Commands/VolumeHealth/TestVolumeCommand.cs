using System.Management.Automation;
using KvmStorage.Core.Images;
using KvmStorage.Core.Access;
using KvmStorage.Core.Images.Check;
using KvmStorage.Infrastructure;

namespace KvmStorage.Commands.VolumeHealth;

/// <summary>Test-Volume: checks an image's metadata like <c>qemu-img check</c> and, with -Repair, fixes it.</summary>
[Cmdlet(VerbsDiagnostic.Test, "Volume", SupportsShouldProcess = true, DefaultParameterSetName = ByVolume)]
[OutputType(typeof(ImageCheckResult))]
public sealed class TestVolumeCommand : VolumeFirstCmdlet
{
    /// <summary>None (default: only check, read-only), Leaks (free leaked clusters) or All (also rebuild refcounts and fix entries).</summary>
    [Parameter]
    public ImageRepairMode Repair { get; set; } = ImageRepairMode.None;

    /// <summary>The passphrase of an encrypted volume: proven to open it before the check (the metadata check itself needs none).</summary>
    [Parameter]
    public System.Security.SecureString? Passphrase { get; set; }

    /// <summary>
    /// Read the image even while a running VM writes it (qemu-img's -U): the result describes a moment of an image
    /// that may be changing, and says so in a warning.
    /// </summary>
    [Parameter]
    public SwitchParameter ForceShare { get; set; }

    protected override void ProcessRecord() => ForEachVolume(CheckOne);

    private void CheckOne(VolumeSpec spec)
    {
        using ImagePassphrase? passphrase = Passphrases.From(Passphrase);
        VolumeAction<ImageCheckResult> check = Volumes.Check(spec, Repair, passphrase, ForceShare);
        WarnIfShared(spec);

        // Checking is read-only and never asks; only a repair writes, so only a repair is confirmed.
        if (Repair != ImageRepairMode.None && !ShouldProcess(check.Target, check.Description))
        {
            return;
        }

        string activity = Repair == ImageRepairMode.None ? "Checking" : "Checking and repairing";
        ImageCheckResult result = RunWithProgress("Test-Volume", $"{activity} {System.IO.Path.GetFileName(check.Target)}", check.Run);
        if (result.MarkedCorrupt)
        {
            WriteWarning($"'{check.Target}' is marked corrupt: QEMU will not open it for writing until 'Test-Volume -Repair All' clears the mark.");
        }

        WriteObject(result);
    }
}
